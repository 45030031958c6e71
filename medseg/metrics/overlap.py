"""Voxel-overlap metrics of one class: Dice, IoU, precision, recall, and volumes in mL.

Conventions (shared by every function here): when prediction and reference are both
empty the scores are 1 (nothing to find, nothing wrongly found); when exactly one is empty
they are 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MM3_PER_ML = 1000.0


def confusion_counts(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int]:
    """True-positive, false-positive and false-negative voxel counts of two boolean masks."""
    tp = int(np.count_nonzero(pred & ref))
    return tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(ref)) - tp


def _ratio(numerator: float, denominator: float, both_empty: bool) -> float:
    if both_empty:
        return 1.0
    return float(numerator / denominator) if denominator else 0.0


def overlap_scores(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Dice, IoU, precision and recall (sensitivity) of boolean masks ``pred`` vs ``ref``."""
    tp, fp, fn = confusion_counts(pred, ref)
    both_empty = tp + fp + fn == 0
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, both_empty),
        "iou": _ratio(tp, tp + fp + fn, both_empty),
        "precision": _ratio(tp, tp + fp, both_empty),
        "recall": _ratio(tp, tp + fn, both_empty),
    }


def volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Volume of a boolean mask in millilitres (voxel count times voxel volume in mm³)."""
    return float(np.count_nonzero(mask) * np.prod(spacing, dtype=np.float64) / MM3_PER_ML)

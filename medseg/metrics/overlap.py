"""Voxel-overlap metrics of one class: Dice, IoU, precision, recall, and volumes in mL.

Conventions (``medseg.core.scoring``, shared with validation during training): when
prediction and reference are both empty the scores are 1 (nothing to find, nothing wrongly
found); when exactly one is empty they are 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medseg.core.scoring import confusion_counts
from medseg.core.scoring import ratio as _ratio

MM3_PER_ML = 1000.0


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

"""The overlap conventions every Dice in medseg follows: validation during training
(``medseg.train.validation``) and evaluation (``medseg.metrics``) read them from here.

- prediction and reference both empty: 1 (nothing to find, nothing wrongly found);
- exactly one of them empty: 0;
- with partial labels, a class absent from the reference was not annotated in that case:
  it is not scored there (NaN, left out of means).
"""

from __future__ import annotations

import math

import numpy as np


def confusion_counts(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int]:
    """True-positive, false-positive and false-negative voxel counts of two boolean masks."""
    tp = int(np.count_nonzero(pred & ref))
    return tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(ref)) - tp


def ratio(numerator: float, denominator: float, both_empty: bool) -> float:
    """An overlap ratio under the conventions above."""
    if both_empty:
        return 1.0
    return float(numerator / denominator) if denominator else 0.0


def dice(pred: np.ndarray, ref: np.ndarray, partial_labels: bool = False) -> float:
    """Dice of two boolean masks (NaN when, with ``partial_labels``, ``ref`` is empty)."""
    tp, fp, fn = confusion_counts(pred, ref)
    if partial_labels and tp + fn == 0:
        return math.nan
    return ratio(2 * tp, 2 * tp + fp + fn, tp + fp + fn == 0)

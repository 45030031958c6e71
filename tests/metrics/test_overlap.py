"""Overlap metrics and volumes against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.metrics.overlap import confusion_counts, overlap_scores, volume_ml


def _box(shape, lo, hi) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return mask


def test_shifted_cube_half_overlap():
    ref = _box((6, 6, 6), (1, 1, 1), (3, 3, 3))  # 8 voxels
    pred = _box((6, 6, 6), (2, 1, 1), (4, 3, 3))  # 8 voxels, 4 shared
    assert confusion_counts(pred, ref) == (4, 4, 4)
    scores = overlap_scores(pred, ref)
    assert scores["dice"] == pytest.approx(0.5)  # 2*4 / (8+8)
    assert scores["iou"] == pytest.approx(1 / 3)  # 4 / 12
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(0.5)


def test_prediction_inside_reference():
    ref = _box((6, 6, 6), (1, 1, 1), (3, 3, 3))  # 8 voxels
    pred = _box((6, 6, 6), (1, 1, 1), (2, 3, 3))  # its 4-voxel half
    scores = overlap_scores(pred, ref)
    assert scores == pytest.approx(
        {"dice": 8 / 12, "iou": 0.5, "precision": 1.0, "recall": 0.5}
    )


def test_both_empty_scores_one_and_one_empty_scores_zero():
    empty = np.zeros((4, 4, 4), dtype=bool)
    voxel = empty.copy()
    voxel[1, 2, 3] = True
    assert overlap_scores(empty, empty) == {"dice": 1.0, "iou": 1.0, "precision": 1.0,
                                            "recall": 1.0}
    for pred, ref in ((voxel, empty), (empty, voxel)):
        assert overlap_scores(pred, ref) == {"dice": 0.0, "iou": 0.0, "precision": 0.0,
                                             "recall": 0.0}


def test_volume_in_millilitres_uses_anisotropic_spacing():
    mask = _box((6, 6, 6), (0, 0, 0), (2, 2, 2))  # 8 voxels of 0.5*2*3 = 3 mm³
    assert volume_ml(mask, (0.5, 2.0, 3.0)) == pytest.approx(8 * 3 / 1000)
    assert volume_ml(np.zeros((3, 3, 3), bool), (1.0, 1.0, 1.0)) == 0.0

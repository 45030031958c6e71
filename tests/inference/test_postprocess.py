"""Largest-connected-component post-processing."""

from __future__ import annotations

import numpy as np

from medseg.inference.postprocess import (
    ComponentEvidence,
    keep_largest_component,
    largest_component,
    pool_evidence,
)


def test_largest_component_keeps_the_biggest_blob():
    mask = np.zeros((10, 10, 10), bool)
    mask[1:4, 1:4, 1:4] = True  # 27 voxels
    mask[6:8, 6:8, 6:8] = True  # 8 voxels
    kept = largest_component(mask)
    assert kept.sum() == 27 and kept[2, 2, 2] and not kept[7, 7, 7]


def test_connectivity_decides_what_touches():
    mask = np.zeros((4, 4, 4), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[2, 2, 2] = True  # diagonal neighbours only
    assert largest_component(mask, connectivity=1).sum() == 1
    assert largest_component(mask, connectivity=3).sum() == 3


def test_keep_largest_component_per_class_and_input_untouched():
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[0:3, 0:3, 0:3] = 1
    labels[10:12, 10:12, 10:12] = 1  # small island of class 1
    labels[5:9, 5:9, 5:9] = 2
    labels[0, 11, 0] = 2  # one-voxel island of class 2
    labels[0, 11, 11] = 3  # class 3 not processed
    before = labels.copy()
    out = keep_largest_component(labels, classes=[1, 2])
    np.testing.assert_array_equal(labels, before)
    assert (out == 1).sum() == 27 and (out == 2).sum() == 64
    assert out[0, 11, 11] == 3 and out[11, 11, 11] == 0 and out.dtype == labels.dtype


def test_evidence_keeps_the_step_only_where_it_raised_validation_dice():
    evidence = ComponentEvidence(dice=(0.50, 0.80, 0.70, 0.60),
                                 dice_largest=(0.55, 0.80, 0.65, 0.90), cases=(3, 3, 3, 0))
    # class 2 unchanged, class 3 worse, class 4 scored on no case: left as predicted
    assert evidence.improved() == (1,)
    assert ComponentEvidence.from_dict(evidence.to_dict()) == evidence
    line = evidence.describe(["a", "b", "c", "d"])
    assert "a 0.500 -> 0.550" in line and "b" not in line.split("for ")[1]
    nothing = ComponentEvidence((0.5,), (0.5,), (2,))
    assert nothing.improved() == () and "none" in nothing.describe(["a"])


def test_folds_pool_their_evidence_weighted_by_scored_cases():
    # fold 0 gains 0.1 on 1 case, fold 1 loses 0.05 on 4 cases: pooled, the step hurts
    fold0 = ComponentEvidence((0.6, 0.5), (0.7, 0.5), (1, 2))
    fold1 = ComponentEvidence((0.8, float("nan")), (0.75, float("nan")), (4, 0))
    pooled = pool_evidence([fold0, fold1])
    assert pooled is not None
    np.testing.assert_allclose(pooled.dice, [(0.6 + 4 * 0.8) / 5, 0.5])
    np.testing.assert_allclose(pooled.dice_largest, [(0.7 + 4 * 0.75) / 5, 0.5])
    assert pooled.cases == (5, 2) and pooled.improved() == ()
    assert pool_evidence([fold0]).improved() == (1,)
    assert pool_evidence([]) is None

"""evaluate_case: labels, spacing from volumes, grid checks, resampling, conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.core import Volume
from medseg.core.errors import GeometryError, InputError
from medseg.metrics import METRICS, evaluate_case
from medseg.metrics.evaluate import with_all_labels
from tests.conftest import make_affine


def _two_planes(shape=(10, 6, 6)) -> tuple[np.ndarray, np.ndarray]:
    """Label 1: planes i=2 (pred) and i=5 (ref). Label 2: the same block in both."""
    pred, ref = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    pred[2], ref[5] = 1, 1
    pred[7:9, 1:4, 1:4] = ref[7:9, 1:4, 1:4] = 2
    return pred, ref


def test_plain_arrays_need_spacing_and_give_every_metric_per_label():
    pred, ref = _two_planes()
    result = evaluate_case(pred, ref, spacing=(1.5, 0.7, 0.9))
    assert sorted(result) == [1, 2]
    assert set(result[1]) == {*METRICS, "scored"}
    assert result[1]["hd95_mm"] == pytest.approx(4.5)
    assert result[1]["dice"] == 0.0
    assert result[2] == pytest.approx({
        "dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0, "hd95_mm": 0.0,
        "assd_mm": 0.0, "nsd": 1.0, "pred_volume_ml": 18 * 1.5 * 0.7 * 0.9 / 1000,
        "ref_volume_ml": 18 * 1.5 * 0.7 * 0.9 / 1000, "scored": 1.0,
    })
    with pytest.raises(ValueError, match="spacing"):
        evaluate_case(pred, ref)


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "PIR"])
def test_volumes_bring_their_spacing_even_reoriented_and_oblique(orientation):
    pred, ref = _two_planes()
    affine = make_affine((1.5, 0.7, 0.9), orientation, oblique_degrees=(12, 0, 7))
    result = evaluate_case(Volume.from_spatial(pred, affine), Volume.from_spatial(ref, affine))
    assert result[1]["assd_mm"] == pytest.approx(4.5)
    assert result[1]["ref_volume_ml"] == pytest.approx(36 * 1.5 * 0.7 * 0.9 / 1000)


def test_requested_label_absent_from_both_follows_the_both_empty_convention():
    pred, ref = _two_planes()
    result = evaluate_case(pred, ref, spacing=(1, 1, 1), labels=[3])
    assert list(result) == [3]
    assert result[3]["dice"] == 1.0 and result[3]["hd95_mm"] == 0.0 and result[3]["nsd"] == 1.0


def test_label_missing_from_prediction_gives_dice_zero_and_nan_distances():
    pred, ref = _two_planes()
    pred[pred == 2] = 0
    result = evaluate_case(pred, ref, spacing=(1, 1, 1))
    assert result[2]["dice"] == 0.0 and result[2]["nsd"] == 0.0
    assert math.isnan(result[2]["hd95_mm"]) and math.isnan(result[2]["assd_mm"])
    assert result[2]["pred_volume_ml"] == 0.0


def test_different_grids_raise_unless_resampling_is_asked_for():
    pred, ref = _two_planes()
    ref_vol = Volume.from_spatial(ref, make_affine((1.5, 0.7, 0.9)), {"source": "ref.nii.gz"})
    # The same labels stored left-right flipped with the matching affine: same world content.
    flipped_affine = make_affine((1.5, 0.7, 0.9), "LAS", origin=(9 * 1.5, 0, 0))
    pred_vol = Volume.from_spatial(ref[::-1].copy(), flipped_affine, {"source": "pred.nii.gz"})
    with pytest.raises(GeometryError, match=r"pred\.nii\.gz.*differs from the reference grid.*"
                                            r"--resample-pred"):
        evaluate_case(pred_vol, ref_vol)
    result = evaluate_case(pred_vol, ref_vol, resample_pred=True)
    assert result[1]["dice"] == 1.0 and result[2]["dice"] == 1.0
    with pytest.raises(GeometryError, match="shape"):
        evaluate_case(pred[:-1], ref, spacing=(1, 1, 1))


def test_resampling_a_shifted_grid_moves_the_labels_in_world_space():
    _, ref = _two_planes()
    ref_vol = Volume.from_spatial(ref, make_affine((2.0, 1.0, 1.0)))
    # Prediction grid starts one voxel further along i; its array holds the ref labels
    # shifted back by one voxel, so in world space it equals the reference.
    shifted = np.zeros_like(ref)
    shifted[:-1] = ref[1:]
    pred_vol = Volume.from_spatial(shifted, make_affine((2.0, 1.0, 1.0), origin=(2.0, 0, 0)))
    result = evaluate_case(pred_vol, ref_vol, resample_pred=True)
    assert result[1]["dice"] == 1.0 and result[2]["dice"] == 1.0


def test_bad_label_inputs_are_input_errors():
    pred, ref = _two_planes()
    with pytest.raises(InputError, match="not a label map"):
        evaluate_case(pred + 0.5, ref, spacing=(1, 1, 1))
    two_channels = Volume(np.stack([ref, ref]), np.eye(4), {"source": "x.nii.gz"})
    with pytest.raises(InputError, match=r"x\.nii\.gz.*2 channels"):
        evaluate_case(two_channels, two_channels)
    assert evaluate_case(pred.astype(np.float32), ref, spacing=(1, 1, 1))[2]["dice"] == 1.0


def test_with_all_labels_adds_both_empty_results():
    pred, ref = _two_planes()
    filled = with_all_labels(evaluate_case(pred, ref, spacing=(1, 1, 1), labels=[1]), [1, 4])
    assert sorted(filled) == [1, 4]
    assert filled[4]["dice"] == 1.0 and filled[4]["ref_volume_ml"] == 0.0


def test_partial_labels_leave_classes_missing_from_the_reference_unscored():
    pred, ref = _two_planes()
    ref[ref == 2] = 0  # class 2 not contoured in this case, but predicted
    full = evaluate_case(pred, ref, spacing=(1.0, 1.0, 1.0), labels=[1, 2])
    assert full[2]["dice"] == 0.0 and full[2]["scored"] == 1.0  # a false positive
    partial = evaluate_case(pred, ref, spacing=(1.0, 1.0, 1.0), labels=[1, 2],
                            partial_labels=True)
    assert partial[2]["scored"] == 0.0
    assert all(math.isnan(partial[2][m]) for m in ("dice", "iou", "hd95_mm", "nsd"))
    assert partial[2]["pred_volume_ml"] == full[2]["pred_volume_ml"]  # still reported
    assert partial[1] == full[1]  # present in the reference: scored as usual


def test_regions_score_unions_of_labels():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 5, (12, 10, 8))
    pred = ref.copy()
    pred[ref == 4] = 1  # enhancing tumour predicted as necrosis: core still right
    regions = {"whole": [1, 2, 3, 4], "core": [1, 3, 4], "enhancing": [4]}
    result = evaluate_case(pred, ref, spacing=(1.0, 1.0, 1.0), labels=[1, 2, 3, 4],
                           regions=regions)
    assert set(result) == {1, 2, 3, 4, "1+2+3+4", "1+3+4", "4"}
    assert result["1+2+3+4"]["dice"] == 1.0 and result["1+3+4"]["dice"] == 1.0
    assert result["4"]["dice"] == 0.0
    both = np.isin(pred, [1, 3, 4]) & np.isin(ref, [1, 3, 4])  # independent count
    assert result["1+3+4"]["pred_volume_ml"] == pytest.approx(both.sum() / 1000)

"""preprocess -> invert returns labels exactly without resampling, Dice >= 0.99 with it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from medseg.core import Volume
from medseg.core.errors import DatasetError, GeometryError
from medseg.data import load_dataset, read_case
from medseg.preprocess import (
    Plan,
    compute_fingerprint,
    invert_labels,
    invert_probabilities,
    plan_dataset,
    preprocess_case,
)
from medseg.preprocess.steps import labels_to_classes, resample_array, resample_linear
from tests.conftest import DICOM_ROOT, requires_shared
from tests.data.synthetic import case_volumes


def make_plan(spacing=(1.0, 1.0, 1.0), label_interpolation="nearest", channels=1) -> Plan:
    return Plan(
        dataset_name="synthetic", labels={0: "background", 1: "left", 2: "right"},
        channels={c: "MRI" for c in range(channels)}, target_spacing=tuple(spacing),
        normalization=tuple({"scheme": "zscore_nonzero"} for _ in range(channels)),
        label_interpolation=label_interpolation,
    )


def dice(a: np.ndarray, b: np.ndarray, k: int) -> float:
    x, y = a == k, b == k
    return 2 * np.count_nonzero(x & y) / (np.count_nonzero(x) + np.count_nonzero(y))


@pytest.mark.parametrize("orientation,oblique", [("RAS", (0, 0, 0)), ("LPI", (0, 0, 0)),
                                                 ("PIR", (12, -7, 20))])
def test_exact_round_trip_without_resampling(orientation, oblique):
    spacing = (0.8, 1.2, 2.0)
    image, label = case_volumes(spacing=spacing, orientation=orientation,
                                oblique_degrees=oblique)
    probe = preprocess_case(image, label, make_plan(spacing))
    ras_spacing = probe.record["steps"][-1]["spacing_before"]  # spacing in RAS axis order
    pre = preprocess_case(image, label, make_plan(ras_spacing))
    assert pre.record["steps"][-1]["identity"] is True
    assert pre.record["steps"][1]["bbox"] != [[0, n] for n in pre.record["source_shape"]]
    back = invert_labels(pre.label, pre.record)
    assert back.array.dtype == np.uint8
    assert np.array_equal(back.array, label.array)
    assert np.array_equal(back.affine, label.affine)


@pytest.mark.parametrize("label_interpolation", ["nearest", "linear"])
@pytest.mark.parametrize("shape,spacing", [((60, 56, 28), (0.9, 1.0, 2.0)),
                                           ((40, 36, 14), (1.2, 1.0, 3.0))])
def test_round_trip_with_resampling_dice(shape, spacing, label_interpolation):
    image, label = case_volumes(shape=shape, spacing=spacing, orientation="LIP",
                                oblique_degrees=(8, 15, -5))
    pre = preprocess_case(image, label, make_plan((1.0, 1.0, 1.0), label_interpolation))
    resample = pre.record["steps"][-1]
    assert resample["identity"] is False
    assert np.allclose(pre.record["spacing"], 1.0, atol=0.05)
    back = invert_labels(pre.label, pre.record)
    assert back.spatial_shape == label.spatial_shape
    assert np.array_equal(back.affine, label.affine)
    for k in (1, 2):
        assert dice(back.array, label.array, k) >= 0.99


def test_preprocessed_affine_keeps_world_positions():
    image, label = case_volumes(shape=(30, 26, 14), spacing=(0.9, 0.9, 2.4), orientation="LPS",
                                oblique_degrees=(0, 10, 0))
    pre = preprocess_case(image, label, make_plan((1.0, 1.0, 1.0)))

    def centroid(arr, aff):
        return (aff @ np.r_[np.argwhere(arr[0] == 1).mean(0), 1.0])[:3]
    src = centroid(label.array, label.affine)
    dst = centroid(pre.label, np.asarray(pre.record["affine"]))
    assert np.linalg.norm(src - dst) < 0.5  # mm


def test_invert_probabilities_sum_to_one_and_background_outside_crop():
    image, label = case_volumes(orientation="ASR")
    pre = preprocess_case(image, label, make_plan((1.1, 0.9, 1.0)))
    k = 3
    probs = np.stack([pre.label[0] == c for c in range(k)]).astype(np.float32)
    back = invert_probabilities(probs, pre.record)
    assert back.shape == (k, *label.spatial_shape)
    assert np.allclose(back.sum(0), 1.0, atol=1e-5)
    assert np.all(back[0][:2] == 1.0)  # the zero slab cropped away is background


def test_unlabelled_case_same_image_as_labelled():
    image, label = case_volumes(spacing=(1.0, 1.0, 1.6))
    with_label = preprocess_case(image, label, make_plan())
    without = preprocess_case(image, None, make_plan())
    assert without.label is None
    assert np.array_equal(with_label.image, without.image)
    assert with_label.record["steps"] == without.record["steps"]


def test_normalization_zscore_inside_nonzero_mask():
    image, label = case_volumes()
    pre = preprocess_case(image, label, make_plan())
    mask = pre.image[0] != 0
    assert pre.image.dtype == np.float32
    assert abs(pre.image[0][mask].mean()) < 1e-3 and abs(pre.image[0][mask].std() - 1) < 1e-3


def test_ct_normalization_clips_then_scales():
    image, label = case_volumes()
    plan = make_plan().with_changes(
        channels={0: "CT"},
        normalization=({"scheme": "ct", "clip": [90.0, 110.0], "mean": 100.0, "std": 5.0},))
    pre = preprocess_case(image, label, plan)
    assert pre.image.min() >= -2.0 - 1e-6 and pre.image.max() <= 2.0 + 1e-6


def test_wrong_prediction_shape_and_undeclared_labels_raise():
    image, label = case_volumes()
    pre = preprocess_case(image, label, make_plan())
    with pytest.raises(GeometryError, match="does not match"):
        invert_labels(np.zeros((3, 3, 3), np.uint8), pre.record)
    bad = label.with_array(np.where(label.array == 2, 9, label.array).astype(np.uint8))
    with pytest.raises(DatasetError, match=r"\[9\]"):
        preprocess_case(image, bad, make_plan())


def test_label_on_another_grid_raises():
    image, label = case_volumes()
    shifted = label.affine.copy()
    shifted[0, 3] += 5.0
    moved = Volume(label.array, shifted)
    with pytest.raises(GeometryError, match="not on the image grid"):
        preprocess_case(image, moved, make_plan())


def test_anisotropic_axis_resampled_by_nearest_neighbour():
    image, label = case_volumes(shape=(24, 20, 8), spacing=(0.7, 0.7, 5.0))
    pre = preprocess_case(image, label, make_plan((0.7, 0.7, 2.5)))
    step = pre.record["steps"][-1]
    assert step["separate_axis"] == 2 and pre.image.shape[3] == 16
    source = preprocess_case(image, None, make_plan((0.7, 0.7, 5.0))).image[0]
    for z in range(pre.image.shape[3]):  # every output slice is a copy of a source slice
        assert any(np.array_equal(pre.image[0, ..., z], source[..., k]) for k in range(8))
    back = invert_labels(pre.label, pre.record)
    assert np.array_equal(back.array, label.array)  # an exact 2x along z inverts exactly


def test_torch_linear_resampling_matches_scipy():
    rng = np.random.default_rng(0)
    array = rng.random((2, 9, 7, 5)).astype(np.float32)
    for shape in [(14, 7, 11), (4, 5, 3)]:
        assert np.allclose(resample_linear(array, shape), resample_array(array, shape, 1),
                           atol=1e-5)


@requires_shared
@pytest.mark.slow
def test_real_oblique_dicom_study_round_trips_exactly():
    ds = load_dataset(DICOM_ROOT / "pgbm")
    plan = plan_dataset(ds, compute_fingerprint(ds, progress=False))
    for case in ds.cases:
        image, label = read_case(case)
        pre = preprocess_case(image, label, plan)
        assert pre.image.shape[0] == 3
        back = invert_labels(pre.label, pre.record)
        assert np.array_equal(back.array, label.array)
        assert np.array_equal(back.affine, image.affine)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_label_values_map_to_class_indices(dtype):
    label = np.array([[[[0, 10, 20], [20, 0, 10]]]], dtype=dtype)
    classes = labels_to_classes(label, [0, 10, 20])
    assert classes.dtype == np.uint8 and classes.tolist() == [[[[0, 1, 2], [2, 0, 1]]]]
    assert labels_to_classes(label // 10, [0, 1, 2]).tolist() == classes.tolist()
    with pytest.raises(DatasetError, match=r"\[20\]"):
        labels_to_classes(label, [0, 10])
    if dtype == np.float32:
        with pytest.raises(DatasetError):
            labels_to_classes(label + 0.5, [0, 10, 20])


def test_preprocessing_imports_no_torch() -> None:
    # `medseg preprocess` starts in a fraction of a second: torch (for the slab-by-slab
    # inversion of predictions) is imported only where predictions are inverted
    code = ("import sys, medseg.preprocess, medseg.cli.preprocess\n"
            "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"

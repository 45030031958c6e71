"""Opt-in regularisation of irregular DICOM series (missing slices, non-uniform spacing, tilt)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from medseg.cli.main import main
from medseg.core import GeometryError, InputError, Volume, geometry
from medseg.core.errors import EXIT_BAD_INPUT, EXIT_OK
from medseg.io import list_series, read_volume
from medseg.io.dicom_regularize import interpolation_weights, regular_depths
from tests.conftest import DICOM_ROOT, make_affine, requires_shared
from tests.io import dicom_factory

# axial, round numbers: every position and step is exact in binary and in DS strings
AXIAL = make_affine((0.5, 0.75, 1.25), "LPS", (0, 0, 0), (10.0, -20.0, 30.0))
OBLIQUE = make_affine((0.7, 0.9, 2.5), "LPS", (10, 20, 5), (4.0, -3.0, 12.5))
SHAPE = (6, 5, 8)
HINT = (r"\(read with regularize=True, --regularize-slices or the pipeline key "
        r"dataset.regularize_slices to resample it onto a regular grid\)$")


def ramp(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    return np.random.default_rng(0).integers(-500, 500, size=shape, dtype=np.int16)


def datasets(array: np.ndarray, affine: np.ndarray = AXIAL) -> list[Dataset]:
    return dicom_factory.series_datasets(array, affine, description="irregular")


def read_regularized(folder: Path, interpolation: str = "linear") -> Volume:
    return read_volume(folder, regularize=True, interpolation=interpolation)  # type: ignore[arg-type]


# --- pure functions ---------------------------------------------------------------------------


def test_regular_depths_keep_the_native_step_across_missing_slices():
    step, targets = regular_depths(np.array([0.0, 1.25, 2.5, 5.0, 6.25, 10.0]))
    assert step == 1.25
    np.testing.assert_array_equal(targets, 1.25 * np.arange(9))


def test_regular_depths_use_the_median_step_and_never_extrapolate():
    step, targets = regular_depths(np.cumsum([0.0, 1, 1, 2, 1, 1.5]))  # span 6.5
    assert step == 1.0
    np.testing.assert_array_equal(targets, np.arange(7.0))


def test_regular_depths_divide_a_whole_span_exactly_within_tolerance():
    step, targets = regular_depths(np.array([0.0, 1.0, 2.0, 3.0, 4.04]), tolerance=0.05)
    assert step == pytest.approx(1.01)
    assert targets[-1] == pytest.approx(4.04)


def test_interpolation_weights_are_hand_computed():
    lower, upper, weight = interpolation_weights(
        np.array([0.0, 1.0, 2.0, 4.0, 5.0, 6.5]), np.arange(7.0)
    )
    np.testing.assert_array_equal(lower, [0, 1, 2, 2, 3, 4, 4])
    np.testing.assert_array_equal(upper, lower + 1)
    np.testing.assert_allclose(weight, [0, 0, 0, 0.5, 0, 0, 2 / 3])


def test_interpolation_weights_copy_slices_within_tolerance():
    _, _, weight = interpolation_weights(np.array([0.0, 1.0, 2.0]), np.array([0.01, 0.98, 1.5]),
                                         tolerance=0.05)  # fmt: skip
    np.testing.assert_array_equal(weight, [0.0, 1.0, 0.5])


# --- missing slices ----------------------------------------------------------------------------


@pytest.mark.parametrize("affine", [AXIAL, OBLIQUE], ids=["axial", "oblique"])
@pytest.mark.parametrize("interpolation", ["linear", "nearest"])
def test_one_missing_slice_is_interpolated_on_the_full_grid(
    tmp_path: Path, affine: np.ndarray, interpolation: str
):
    array = ramp()
    dicom_factory.save_series(datasets(array, affine), tmp_path / "full")
    items = datasets(array, affine)
    del items[3]
    dicom_factory.save_series(items, tmp_path / "gap")
    full = read_volume(tmp_path / "full")
    vol = read_regularized(tmp_path / "gap", interpolation)
    if affine is AXIAL:
        np.testing.assert_array_equal(vol.affine, full.affine)
    else:  # DS strings round oblique positions: steps agree to their precision
        np.testing.assert_allclose(vol.affine, full.affine, rtol=0, atol=1e-9)
    direction = geometry.direction(vol.affine)
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-9)  # orthogonal
    kept = [k for k in range(SHAPE[2]) if k != 3]
    np.testing.assert_array_equal(vol.array[0][..., kept], array[..., kept])
    if interpolation == "linear":
        assert vol.dtype == np.float32
        expected = (array[..., 2].astype(np.float32) + array[..., 4]) / 2
    else:
        assert vol.dtype == np.int16
        expected = array[..., 2]  # a tie goes to the lower slice
    # oblique DS positions put the gap's middle within ~1e-13 of a weight of 0.5
    np.testing.assert_allclose(vol.array[0, ..., 3], expected, rtol=0,
                               atol=0 if affine is AXIAL else 1e-4)  # fmt: skip


def test_regularisation_is_logged_once_and_recorded(tmp_path: Path, caplog):
    items = datasets(ramp())
    del items[5]
    del items[2]
    dicom_factory.save_series(items, tmp_path)
    with caplog.at_level(logging.WARNING, logger="medseg.io"):
        vol = read_regularized(tmp_path)
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = record.getMessage()
    assert "'irregular'" in message and "2 missing slice(s) interpolated" in message
    assert "step 1.25 mm, 6 → 8 slices" in message
    meta = json.loads(json.dumps(vol.meta["regularized"]))
    assert meta == {
        "reasons": ["missing slices"], "interpolation": "linear", "step_mm": 1.25,
        "source_slices": 6, "slices": 8,
        "source_depths_mm": [0.0, 1.25, 3.75, 5.0, 7.5, 8.75],
    }  # fmt: skip
    assert vol.meta["dicom_files"] == [] and vol.meta["sop_instance_uids"] == []


@requires_shared
@pytest.mark.slow
def test_real_oblique_mask_with_a_missing_slice(tmp_path: Path):
    info = next(i for i in list_series(DICOM_ROOT / "pgbm" / "PGBM-001")
                if i.description == "Mask_Tumor")  # fmt: skip
    full = read_volume(info.folder)
    tumour = full.array[0].sum(axis=(0, 1))[1:-1]
    gap = 1 + int(np.argmax(tumour))  # the inner slice with the most tumour
    for k, path in enumerate(info.files):  # files in k order
        if k != gap:
            shutil.copy(path, tmp_path / path.name)
    vol = read_regularized(tmp_path, "nearest")
    np.testing.assert_allclose(vol.affine, full.affine, rtol=0, atol=1e-6)
    kept = [k for k in range(full.spatial_shape[2]) if k != gap]
    np.testing.assert_array_equal(vol.array[0][..., kept], full.array[0][..., kept])
    np.testing.assert_array_equal(vol.array[0][..., gap], full.array[0][..., gap - 1])


# --- non-uniform spacing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interpolation", "expected"),
    [("linear", [0, 10, 20, 30, 40, 50, 70]), ("nearest", [0, 10, 20, 20, 40, 50, 80])],
)
def test_non_uniform_spacing_uses_the_median_step(
    tmp_path: Path, interpolation: str, expected: list[float]
):
    affine = make_affine((0.5, 0.75, 1.0), "LPS", (0, 0, 0), (10.0, -20.0, 30.0))
    depths = np.cumsum([0.0, 1, 1, 2, 1, 1.5])  # steps 1, 1, 2, 1, 1.5: median 1
    base = np.arange(6 * 5, dtype=np.int16).reshape(6, 5, 1)
    values = np.array([0, 10, 20, 40, 50, 80], dtype=np.int16)  # 10 * depth, but 80 at 6.5
    items = datasets(base + values, affine)
    for k, ds in enumerate(items):
        dicom_factory.move_slice(ds, dicom_factory.slice_normal(ds) * (depths[k] - k))
    dicom_factory.save_series(items, tmp_path, naming="shuffled")
    vol = read_regularized(tmp_path, interpolation)
    np.testing.assert_array_equal(vol.affine, affine)  # origin at the first slice, step 1
    assert vol.spatial_shape == (6, 5, 7)
    np.testing.assert_allclose(vol.array[0], base + np.array(expected, np.float32), rtol=1e-6)
    assert vol.meta["regularized"]["reasons"] == ["non-uniform slice spacing"]
    assert vol.meta["regularized"]["source_depths_mm"] == depths.tolist()


# --- gantry tilt -------------------------------------------------------------------------------


def linear_function(points_ras: np.ndarray) -> np.ndarray:
    return 7.0 + points_ras @ np.array([3.0, -2.0, 5.0])


def tilted_series(folder: Path, affine: np.ndarray, shifts_ij: np.ndarray) -> np.ndarray:
    """A stack whose slice k is moved in-plane by ``shifts_ij[k]`` voxels, sampling
    ``linear_function`` at its true voxel positions (stored x100, RescaleSlope 0.01)."""
    shape = (12, 10, len(shifts_ij))
    index = np.indices(shape, dtype=np.float64).reshape(3, -1).T
    moved = index + np.column_stack([shifts_ij[index[:, 2].astype(int)], np.zeros(len(index))])
    values = linear_function(geometry.apply_affine(affine, moved)).reshape(shape)
    items = datasets(np.round(values * 100).astype(np.int16), affine)
    spacing = np.linalg.norm(affine[:3, :2], axis=0)
    for ds, (di, dj) in zip(items, shifts_ij, strict=True):
        iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        dicom_factory.move_slice(ds, iop[:3] * di * spacing[0] + iop[3:] * dj * spacing[1])
        ds.RescaleSlope = "0.01"
    dicom_factory.save_series(items, folder)
    return values


def test_tilted_stack_is_resampled_onto_the_orthogonal_grid(tmp_path: Path):
    affine = make_affine((1.0, 0.8, 2.0), "LPS", (0, 0, 0), (5.0, -4.0, 10.0))
    shifts = np.column_stack([0.3 * np.arange(6), 0.5 * np.arange(6)])  # voxels (i, j)
    tilted_series(tmp_path, affine, shifts)
    with pytest.raises(GeometryError, match=r"gantry tilt .*" + HINT):
        read_volume(tmp_path)
    vol = read_regularized(tmp_path)
    np.testing.assert_allclose(vol.affine, affine, rtol=0, atol=1e-9)
    index = np.indices(vol.spatial_shape, dtype=np.float64)
    source_i = index[0] - shifts[:, 0]  # where each grid voxel lies in its source slice
    source_j = index[1] - shifts[:, 1]
    inside = (source_i >= 0) & (source_i <= 11) & (source_j >= 0) & (source_j <= 9)
    outside = (source_i < -1) | (source_j < -1)
    truth = linear_function(geometry.apply_affine(affine, index.reshape(3, -1).T))
    truth = truth.reshape(vol.spatial_shape)
    assert inside.sum() > 0.6 * inside.size and outside.any()
    np.testing.assert_allclose(vol.array[0][inside], truth[inside], atol=0.011)
    assert np.all(vol.array[0][outside] == vol.meta["regularized"]["fill_value"])
    meta = vol.meta["regularized"]
    assert meta["reasons"] == ["gantry tilt"]
    expected_tilt = np.degrees(np.arctan2(np.hypot(5 * 0.3 * 1.0, 5 * 0.5 * 0.8), 10.0))
    assert meta["tilt_degrees"] == pytest.approx(expected_tilt, abs=1e-4)


def test_nearest_tilt_with_whole_voxel_shifts_moves_labels_exactly(tmp_path: Path):
    labels = np.zeros((8, 7, 4), dtype=np.int16)
    labels[2:6, 1:5, :] = 3
    items = datasets(labels, AXIAL)
    for k, ds in enumerate(items):
        dicom_factory.move_slice(ds, np.array([0.0, 0.75 * k, 0.0]))  # +1 voxel along j (LPS y)
    dicom_factory.save_series(items, tmp_path)
    vol = read_regularized(tmp_path, "nearest")
    assert vol.dtype == np.int16
    for k in range(4):
        expected = np.zeros((8, 7), np.int16)
        expected[2:6, 1 + k : 5 + k] = 3
        np.testing.assert_array_equal(vol.array[0, ..., k], expected)


# --- what stays refused ------------------------------------------------------------------------


def missing(items: list[Dataset]) -> None:
    del items[3]


def non_uniform(items: list[Dataset]) -> None:
    for k, ds in enumerate(items):
        dicom_factory.move_slice(ds, dicom_factory.slice_normal(ds) * 0.3 * k * k)


def tilted(items: list[Dataset]) -> None:
    for k, ds in enumerate(items):
        dicom_factory.move_slice(ds, np.array([0.0, 0.4 * k, 0.0]))


@pytest.mark.parametrize(
    ("breaker", "match"),
    [(missing, "missing slice"), (non_uniform, "non-uniform"), (tilted, "gantry tilt")],
)
def test_default_refuses_with_a_hint(tmp_path: Path, breaker, match: str):
    items = datasets(ramp())
    breaker(items)
    dicom_factory.save_series(items, tmp_path)
    with pytest.raises(GeometryError, match=f"{match}.*{HINT}"):
        read_volume(tmp_path)


def duplicated(items: list[Dataset]) -> None:
    items[4].ImagePositionPatient = items[2].ImagePositionPatient


def mixed_sizes(items: list[Dataset]) -> None:
    dicom_factory.set_pixels(items[2], np.zeros((7, 5), np.int16))


def mixed_spacing(items: list[Dataset]) -> None:
    items[2].PixelSpacing = ["0.9", "0.5"]


def mixed_orientation(items: list[Dataset]) -> None:
    items[2].ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]


@pytest.mark.parametrize(
    ("breaker", "match"),
    [(duplicated, "share a position"), (mixed_sizes, "mixed image sizes"),
     (mixed_spacing, "mixed PixelSpacing"), (mixed_orientation, "mixed slice orientations")],
)  # fmt: skip
def test_regularize_still_refuses_what_has_no_single_grid(tmp_path: Path, breaker, match: str):
    items = datasets(ramp())
    breaker(items)
    dicom_factory.save_series(items, tmp_path)
    with pytest.raises(GeometryError, match=match) as info:
        read_regularized(tmp_path)
    assert str(tmp_path) in str(info.value)  # the folder given is named
    assert "regularize" not in str(info.value).replace(str(tmp_path), "")


def test_regular_series_is_untouched_by_regularize(tmp_path: Path, caplog):
    array = ramp()
    dicom_factory.save_series(datasets(array), tmp_path)
    with caplog.at_level(logging.WARNING):
        vol = read_regularized(tmp_path)
    assert not caplog.records and "regularized" not in vol.meta
    assert vol.dtype == np.int16 and len(vol.meta["dicom_files"]) == SHAPE[2]
    np.testing.assert_array_equal(vol.array[0], array)


def test_unknown_interpolation_is_an_input_error(tmp_path: Path):
    dicom_factory.save_series(datasets(ramp()), tmp_path)
    with pytest.raises(InputError, match="slice interpolation must be one of linear, nearest"):
        read_regularized(tmp_path, "cubic")


# --- command line ------------------------------------------------------------------------------


def test_cli_regularize_slices(tmp_path: Path, capsys):
    items = datasets(ramp())
    del items[3]
    dicom_factory.save_series(items, tmp_path / "gap")
    out = tmp_path / "out" / "gap.nii.gz"
    assert main(["convert", str(tmp_path / "gap"), str(out)]) == EXIT_BAD_INPUT
    assert "--regularize-slices" in capsys.readouterr().err
    args = ["convert", str(tmp_path / "gap"), str(out), "--regularize-slices"]
    assert main([*args, "--slice-interpolation", "nearest"]) == EXIT_OK
    written = read_volume(out)
    assert written.spatial_shape == SHAPE and written.dtype == np.int16
    np.testing.assert_allclose(written.affine, read_regularized(tmp_path / "gap").affine,
                               atol=1e-5)  # fmt: skip
    capsys.readouterr()
    assert main(["info", str(tmp_path / "gap"), "--regularize-slices", "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["volume"]["shape"] == list(SHAPE)
    assert report["regularized"]["reasons"] == ["missing slices"]
    assert main(["info", str(tmp_path / "gap"), "--regularize-slices"]) == EXIT_OK
    assert "regularized  missing slices: 7 source slices -> 8" in capsys.readouterr().out

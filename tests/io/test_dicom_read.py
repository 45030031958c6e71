"""Synthetic DICOM series read back with the known affine and values, and as SimpleITK does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

from medseg.core import InputError
from medseg.io import list_series, read_volume
from medseg.io.sitk_io import sitk_to_volume
from tests.conftest import make_affine
from tests.io import dicom_factory

SHAPE = (7, 6, 5)  # (I, J, K): columns, rows, slices


def ramp(shape: tuple[int, ...] = SHAPE, dtype: type = np.int16) -> np.ndarray:
    """Distinct value per voxel, so any axis swap or flip changes the array."""
    return (np.arange(np.prod(shape)).reshape(shape) * 3 - 40).astype(dtype)


def sitk_read(folder: Path):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk_to_volume(reader.Execute(), {})


GEOMETRIES = {
    "axial": make_affine((0.8, 0.9, 2.5), "LPS", origin=(10, -20, 30)),
    "sagittal": make_affine((1.1, 0.7, 3.0), "PIR", origin=(-5, 4, 60)),
    "coronal": make_affine((0.5, 0.6, 1.5), "LIP", origin=(0, 40, -3)),
    "oblique": make_affine((0.69, 0.69, 6.5), "LPS", (12.0, -7.0, 25.0), (-90, -97, 47)),
}


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
@pytest.mark.parametrize("naming", ["index", "reversed", "shuffled"])
def test_series_reads_with_known_affine_and_values(tmp_path: Path, name: str, naming: str):
    affine = GEOMETRIES[name]
    paths = dicom_factory.write_series(tmp_path / "s", ramp(), affine, naming=naming)
    vol = read_volume(tmp_path / "s")
    np.testing.assert_allclose(vol.affine, affine, atol=1e-6)
    assert vol.array.shape == (1, *SHAPE)
    assert vol.dtype == np.int16
    np.testing.assert_array_equal(vol.array[0], ramp())
    assert vol.meta["format"] == "dicom"
    assert vol.meta["dicom_files"] == [str(p) for p in paths]  # files in k order


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_series_matches_simpleitk(tmp_path: Path, name: str):
    dicom_factory.write_series(tmp_path / "s", ramp(), GEOMETRIES[name], naming="shuffled")
    ours, theirs = read_volume(tmp_path / "s"), sitk_read(tmp_path / "s")
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-4)
    np.testing.assert_array_equal(ours.array, theirs.array)


def test_slices_sorted_by_position_not_instance_number(tmp_path: Path):
    datasets = dicom_factory.series_datasets(ramp(), GEOMETRIES["oblique"])
    for ds, number in zip(datasets, [5, 1, 4, 2, 3], strict=True):
        ds.InstanceNumber = number
    dicom_factory.save_series(datasets, tmp_path, naming="shuffled")
    vol = read_volume(tmp_path)
    np.testing.assert_array_equal(vol.array[0], ramp())
    expected_uids = [ds.SOPInstanceUID for ds in datasets]
    assert vol.meta["sop_instance_uids"] == expected_uids


def test_slice_axis_against_normal_is_flipped_to_increasing_position(tmp_path: Path):
    affine = make_affine((1.0, 1.0, 2.0), "LPI", origin=(0, 0, 50))  # k runs against row x col
    dicom_factory.write_series(tmp_path, ramp(), affine)
    vol = read_volume(tmp_path)
    np.testing.assert_array_equal(vol.array[0], ramp()[:, :, ::-1])
    expected = affine.copy()
    expected[:3, 3] = affine[:3, :3] @ [0, 0, SHAPE[2] - 1] + affine[:3, 3]
    expected[:3, 2] *= -1
    np.testing.assert_allclose(vol.affine, expected, atol=1e-6)
    theirs = sitk_read(tmp_path)
    np.testing.assert_allclose(vol.affine, theirs.affine, atol=1e-4)
    np.testing.assert_array_equal(vol.array, theirs.array)


def test_rescale_gives_float32_values(tmp_path: Path):
    raw = ramp(dtype=np.uint16) + 100
    dicom_factory.write_series(tmp_path, raw, GEOMETRIES["axial"], slope=0.5, intercept=-1024)
    vol = read_volume(tmp_path)
    assert vol.dtype == np.float32
    np.testing.assert_allclose(vol.array[0], raw * 0.5 - 1024)
    np.testing.assert_allclose(vol.array, sitk_read(tmp_path).array)


def test_identity_rescale_keeps_integer_dtype(tmp_path: Path):
    dicom_factory.write_series(
        tmp_path, ramp(dtype=np.uint16) + 50, GEOMETRIES["axial"], slope=1, intercept=0
    )
    assert read_volume(tmp_path).dtype == np.uint16


def test_meta_keys(tmp_path: Path):
    dicom_factory.write_series(tmp_path, ramp(), GEOMETRIES["axial"], description="T1 axial")
    meta = read_volume(tmp_path).meta
    assert meta["series_description"] == "T1 axial"
    assert meta["modality"] == "MR" and meta["patient_id"] == "SYNTH-001"
    assert meta["study_uid"] and meta["frame_of_reference_uid"] and meta["series_uid"]
    assert len(meta["dicom_files"]) == len(meta["sop_instance_uids"]) == SHAPE[2]


def test_enhanced_multiframe_file(tmp_path: Path):
    affine = GEOMETRIES["oblique"]
    path = dicom_factory.write_enhanced(tmp_path / "mf.dcm", ramp(), affine)
    for source in (path, tmp_path):
        vol = read_volume(source)
        np.testing.assert_allclose(vol.affine, affine, atol=1e-6)
        np.testing.assert_array_equal(vol.array[0], ramp())


def test_rle_compressed_series_is_decoded(tmp_path: Path):
    datasets = dicom_factory.series_datasets(ramp(), GEOMETRIES["sagittal"])
    for ds in datasets:
        ds.compress(RLELossless)
    dicom_factory.save_series(datasets, tmp_path)
    np.testing.assert_array_equal(read_volume(tmp_path).array[0], ramp())


def test_single_slice_file_uses_slice_thickness(tmp_path: Path):
    paths = dicom_factory.write_series(tmp_path, ramp(), GEOMETRIES["axial"])
    vol = read_volume(paths[2])
    assert vol.spatial_shape == (SHAPE[0], SHAPE[1], 1)
    np.testing.assert_allclose(vol.spacing, (0.8, 0.9, 2.5), atol=1e-6)
    np.testing.assert_array_equal(vol.array[0, :, :, 0], ramp()[:, :, 2])


def _study(tmp_path: Path) -> Path:
    dicom_factory.write_series(tmp_path / "a" / "t1", ramp(), GEOMETRIES["axial"],
                               description="T1 post", series_uid="1.2.3.1")
    dicom_factory.write_series(tmp_path / "a" / "t2", ramp() * 2, GEOMETRIES["axial"],
                               description="T2", series_uid="1.2.3.2")
    dicom_factory.write_series(tmp_path / "b", ramp((4, 4, 3)), GEOMETRIES["oblique"],
                               description="T1 pre", series_uid="1.2.3.3")
    (tmp_path / "README.txt").write_text("not an image")
    return tmp_path


def test_list_series_of_a_study(tmp_path: Path):
    infos = {s.uid: s for s in list_series(_study(tmp_path))}
    assert set(infos) == {"1.2.3.1", "1.2.3.2", "1.2.3.3"}
    t1 = infos["1.2.3.1"]
    assert (t1.description, t1.modality, t1.shape, t1.n_files) == ("T1 post", "MR", SHAPE, 5)
    np.testing.assert_allclose(t1.spacing, (0.8, 0.9, 2.5), atol=1e-6)
    assert t1.folder == tmp_path / "a" / "t1" and t1.problem is None
    assert infos["1.2.3.3"].shape == (4, 4, 3)


@pytest.mark.parametrize(
    ("selector", "uid"), [("1.2.3.2", "1.2.3.2"), ("T2", "1.2.3.2"), ("t1 post", "1.2.3.1"),
                          ("pre", "1.2.3.3")],
)
def test_series_selector(tmp_path: Path, selector: str, uid: str):
    assert read_volume(_study(tmp_path), series=selector).meta["series_uid"] == uid


@pytest.mark.parametrize(("selector", "message"), [(None, "3 series found"),
                                                   ("T1", "ambiguous"), ("FLAIR", "no series")])
def test_ambiguous_or_unknown_selector_lists_series(tmp_path: Path, selector, message):
    with pytest.raises(InputError, match=message) as info:
        read_volume(_study(tmp_path), series=selector)
    assert "T1 post" in str(info.value) and str(tmp_path) in str(info.value)


@pytest.mark.parametrize(
    ("dtype", "bits_stored", "implicit"),
    [(np.uint16, 12, False), (np.int16, 12, False), (np.uint8, 8, False), (np.int16, 16, True)],
)
def test_native_pixel_decoding_matches_pydicom(tmp_path: Path, dtype, bits_stored, implicit):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    raw = rng.integers(info.min, info.max, size=SHAPE, endpoint=True).astype(dtype)
    datasets = dicom_factory.series_datasets(raw.astype(np.int16), GEOMETRIES["oblique"])
    for ds, k in zip(datasets, range(SHAPE[2]), strict=True):
        plane = np.ascontiguousarray(raw[:, :, k].T)  # high bits may hold garbage on purpose
        ds.BitsAllocated = plane.dtype.itemsize * 8
        ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
        ds.PixelRepresentation = int(np.issubdtype(dtype, np.signedinteger))
        ds.PixelData = plane.tobytes()
        if implicit:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    paths = dicom_factory.save_series(datasets, tmp_path)
    vol = read_volume(tmp_path)
    expected = np.stack([pydicom.dcmread(p).pixel_array.T for p in paths], axis=-1)
    assert vol.dtype == expected.dtype
    np.testing.assert_array_equal(vol.array[0], expected)


def test_threaded_reading_gives_the_same_volume(tmp_path: Path, monkeypatch):
    from medseg.io import dicom_series

    dicom_factory.write_series(tmp_path, ramp(), GEOMETRIES["oblique"], naming="shuffled")
    serial = read_volume(tmp_path)
    monkeypatch.setattr(dicom_series, "PARALLEL_MIN_FILES", 2)
    monkeypatch.setattr(dicom_series.os, "cpu_count", lambda: 4)
    threaded = read_volume(tmp_path)
    np.testing.assert_array_equal(threaded.array, serial.array)
    np.testing.assert_array_equal(threaded.affine, serial.affine)
    assert threaded.meta == serial.meta


@pytest.mark.parametrize("head_bytes", [200, 700, 1000])
def test_headers_longer_than_the_first_read_are_parsed_from_the_file(
    tmp_path: Path, monkeypatch, head_bytes: int
):
    from medseg.io import dicom_series

    datasets = dicom_factory.series_datasets(ramp(), GEOMETRIES["sagittal"])
    datasets[1].add_new(0x60003000, "OW", b"\x01" * 3000)  # a long element before the pixels
    dicom_factory.save_series(datasets, tmp_path, naming="shuffled")
    expected = read_volume(tmp_path)
    monkeypatch.setattr(dicom_series, "HEAD_BYTES", head_bytes)
    vol = read_volume(tmp_path)
    np.testing.assert_array_equal(vol.array, expected.array)
    np.testing.assert_array_equal(vol.affine, expected.affine)


@settings(max_examples=15, deadline=None)
@given(
    angles=st.tuples(*[st.floats(-180, 180, allow_nan=False, allow_subnormal=False)] * 3),
    spacing=st.tuples(*[st.floats(0.3, 5.0, allow_nan=False, allow_subnormal=False)] * 3),
    origin=st.tuples(*[st.floats(-300, 300, allow_nan=False, allow_subnormal=False)] * 3),
)
def test_any_oblique_geometry_matches_known_affine_and_simpleitk(angles, spacing, origin):
    import tempfile

    affine = make_affine(spacing, "LPS", angles, origin)
    with tempfile.TemporaryDirectory() as tmp:
        dicom_factory.write_series(Path(tmp), ramp(), affine, naming="shuffled")
        ours, theirs = read_volume(tmp), sitk_read(Path(tmp))
    np.testing.assert_allclose(ours.affine, affine, atol=1e-5)
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-4)
    np.testing.assert_array_equal(ours.array[0], ramp())

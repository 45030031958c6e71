"""Every kind of bad DICOM input gives the documented error naming the file or series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless

from medseg.core import GeometryError, ReadError
from medseg.io import list_series, read_volume
from tests.conftest import make_affine
from tests.io import dicom_factory

AFFINE = make_affine((0.7, 0.7, 3.0), "LPS", (5.0, 0.0, 10.0), (0, 0, 0))
UID = "1.2.826.0.1.3680043.8.498.77"


def datasets(n: int = 6) -> list[Dataset]:
    array = np.arange(6 * 5 * n, dtype=np.int16).reshape(6, 5, n)
    return dicom_factory.series_datasets(array, AFFINE, series_uid=UID, description="broken")


def shift(ds: Dataset, offset_lps: np.ndarray) -> None:
    ds.ImagePositionPatient = [f"{float(v) + d:.6f}" for v, d in
                               zip(ds.ImagePositionPatient, offset_lps, strict=True)]


def normal() -> np.ndarray:
    iop = np.asarray(datasets(1)[0].ImageOrientationPatient, dtype=float)
    return np.cross(iop[:3], iop[3:])


def read_error(folder: Path, kind: type[Exception], match: str) -> str:
    with pytest.raises(kind, match=match) as info:
        read_volume(folder)
    return str(info.value)


def test_missing_slice(tmp_path: Path):
    items = datasets()
    del items[3]
    dicom_factory.save_series(items, tmp_path)
    assert UID in read_error(tmp_path, GeometryError, "missing slice")


def test_non_uniform_spacing(tmp_path: Path):
    items = datasets()
    for k, ds in enumerate(items):
        shift(ds, normal() * 0.4 * k * k)
    dicom_factory.save_series(items, tmp_path)
    assert "broken" in read_error(tmp_path, GeometryError, "non-uniform slice spacing")


def test_duplicated_positions(tmp_path: Path):
    items = datasets()
    items[4].ImagePositionPatient = items[2].ImagePositionPatient
    dicom_factory.save_series(items, tmp_path)
    assert UID in read_error(tmp_path, GeometryError, "share a position")


def test_gantry_tilt(tmp_path: Path):
    items = datasets()
    row = np.asarray(items[0].ImageOrientationPatient[3:], dtype=float)
    for k, ds in enumerate(items):
        shift(ds, row * 0.5 * k)  # each slice slides along the column direction
    dicom_factory.save_series(items, tmp_path)
    assert UID in read_error(tmp_path, GeometryError, "gantry tilt")


def test_mixed_rows_columns(tmp_path: Path):
    items = datasets()
    dicom_factory.set_pixels(items[2], np.zeros((7, 5), np.int16))
    dicom_factory.save_series(items, tmp_path)
    message = read_error(tmp_path, GeometryError, "mixed image sizes")
    assert UID in message and "5x7" in message


def test_mixed_orientations(tmp_path: Path):
    items = datasets()
    items[1].ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]
    dicom_factory.save_series(items, tmp_path)
    assert UID in read_error(tmp_path, GeometryError, "mixed slice orientations")


def test_list_series_reports_problem_without_raising(tmp_path: Path):
    items = datasets()
    del items[2]
    dicom_factory.save_series(items, tmp_path)
    (info,) = list_series(tmp_path)
    assert info.uid == UID and "missing slice" in (info.problem or "")


def test_missing_image_position(tmp_path: Path):
    items = datasets()
    del items[1].ImagePositionPatient
    paths = dicom_factory.save_series(items, tmp_path)
    assert str(paths[1]) in read_error(tmp_path, ReadError, "lacks ImagePositionPatient")


def test_empty_folder(tmp_path: Path):
    read_error(tmp_path, ReadError, "folder is empty")


def test_folder_without_dicom(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "scan.bin").write_bytes(b"\x00" * 500)
    assert str(tmp_path) in read_error(tmp_path, ReadError, "no DICOM images found")


def test_dicomdir_only_folder(tmp_path: Path):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.FileSetID = "SET"
    ds.DirectoryRecordSequence = []
    ds.save_as(tmp_path / "DICOMDIR", enforce_file_format=True)
    read_error(tmp_path, ReadError, "only a DICOMDIR")


def test_images_without_pixel_data(tmp_path: Path):
    items = datasets(3)
    for ds in items:
        del ds.PixelData
    paths = dicom_factory.save_series(items, tmp_path)
    read_error(tmp_path, ReadError, "without pixel data")
    with pytest.raises(ReadError, match="no image") as info:
        read_volume(paths[0])
    assert str(paths[0]) in str(info.value)


def test_zero_byte_file(tmp_path: Path):
    dicom_factory.save_series(datasets(), tmp_path)
    (tmp_path / "IM9999.dcm").write_bytes(b"")
    assert "IM9999.dcm" in read_error(tmp_path, ReadError, "0 bytes")


@pytest.mark.parametrize(("keep", "match"), [(300, "corrupt or truncated"),
                                             (700, "has no image data")])
def test_truncated_header(tmp_path: Path, keep: int, match: str):
    paths = dicom_factory.save_series(datasets(), tmp_path)
    paths[2].write_bytes(paths[2].read_bytes()[:keep])
    assert str(paths[2]) in read_error(tmp_path, ReadError, match)


def test_one_slice_without_pixel_data(tmp_path: Path):
    items = datasets()
    del items[3].PixelData
    paths = dicom_factory.save_series(items, tmp_path)
    assert str(paths[3]) in read_error(tmp_path, ReadError, "has no image data")


def test_truncated_pixel_data(tmp_path: Path):
    paths = dicom_factory.save_series(datasets(), tmp_path)
    paths[4].write_bytes(paths[4].read_bytes()[:-20])
    assert str(paths[4]) in read_error(tmp_path, ReadError, "pixel data")


def test_compressed_without_decoder(tmp_path: Path):
    items = datasets()
    for ds in items:
        ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60])
    paths = dicom_factory.save_series(items, tmp_path)
    message = read_error(tmp_path, ReadError, "cannot decode pixel data")
    assert "JPEG 2000" in message and any(str(p) in message for p in paths)


def test_input_files_are_not_modified(tmp_path: Path):
    paths = dicom_factory.save_series(datasets(), tmp_path)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}
    read_volume(tmp_path)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths} == before
    assert sorted(tmp_path.iterdir()) == sorted(paths)


def test_mixed_pixel_spacing(tmp_path: Path):
    items = datasets()
    items[3].PixelSpacing = ["0.9", "0.9"]
    dicom_factory.save_series(items, tmp_path)
    assert UID in read_error(tmp_path, GeometryError, "mixed PixelSpacing")


def test_multiframe_without_functional_groups(tmp_path: Path):
    (ds,) = datasets(1)
    ds.NumberOfFrames = 3
    dicom_factory.set_pixels(ds, np.zeros((3, 5, 6), np.int16))
    (path,) = dicom_factory.save_series([ds], tmp_path)
    assert str(path) in read_error(tmp_path, ReadError, "without per-frame functional groups")


def test_colour_images_refused(tmp_path: Path):
    items = datasets(2)
    for ds in items:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.PixelData = np.zeros((5, 6, 3), np.uint8).tobytes()
    dicom_factory.save_series(items, tmp_path)
    read_error(tmp_path, ReadError, "SamplesPerPixel=3")


@pytest.mark.parametrize("problem", ["missing", "duplicated", "mixed sizes"])
def test_series_errors_name_the_folder_given(tmp_path: Path, problem: str):
    items = datasets()
    if problem == "missing":
        del items[3]
    elif problem == "duplicated":
        items[4].ImagePositionPatient = items[3].ImagePositionPatient
    else:
        dicom_factory.set_pixels(items[2], np.zeros((7, 5), np.int16))
    folder = tmp_path / "patient 17" / "CT"
    dicom_factory.save_series(items, folder)
    with pytest.raises((GeometryError, ReadError)) as info:
        read_volume(folder)
    assert str(folder) in str(info.value) and UID in str(info.value)


@pytest.mark.parametrize("how", ["blank", "absent"])
def test_series_without_uids_reads_as_one_series(tmp_path: Path, caplog, how: str):
    """De-identified exports: SeriesInstanceUID/StudyInstanceUID/SOPInstanceUID blanked or
    removed; one folder of consistent slices is still one series (one warning line)."""
    array = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    items = dicom_factory.series_datasets(array, AFFINE)
    for ds in items:
        for keyword in ("SeriesInstanceUID", "StudyInstanceUID", "SOPInstanceUID"):
            if how == "blank":
                setattr(ds, keyword, "")
            else:
                delattr(ds, keyword)
        ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
    dicom_factory.save_series(items, tmp_path / "a", naming="shuffled")
    other = dicom_factory.series_datasets(array[::-1].copy(), make_affine((0.7, 0.7, 3.0),
                                                                          "RAS"))
    for ds in other:
        ds.SeriesInstanceUID = ""
    dicom_factory.save_series(other, tmp_path / "b")
    with caplog.at_level("WARNING"):
        infos = list_series(tmp_path)
    assert len(infos) == 2 and all(i.problem is None for i in infos)
    assert sum("without SeriesInstanceUID" in r.getMessage() for r in caplog.records) == 2
    volume = read_volume(tmp_path / "a")
    np.testing.assert_array_equal(volume.array[0], array)
    np.testing.assert_allclose(volume.affine, AFFINE, atol=1e-6)
    assert list_series(tmp_path / "a")[0].uid == infos[0].uid  # stable, derived identifier

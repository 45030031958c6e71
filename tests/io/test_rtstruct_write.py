"""Writing RT Structure Sets: contours read back by an independent rasteriser
(``tests/io/even_odd.py``) give the label map back, on oblique and sagittal series; the
file references its source images and passes dciodvfy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.core import Volume
from medseg.core.errors import OutputError
from medseg.io import read_annotation, read_volume
from medseg.io.rtstruct_write import DEFAULT_COLORS, write_rtstruct
from tests.conftest import make_affine, sphere_label
from tests.io.dciodvfy import dciodvfy_errors, requires_dciodvfy
from tests.io.dicom_factory import write_series
from tests.io.even_odd import rasterize, series_geometry

SHAPE = (24, 20, 5)
NAMES = {0: "background", 1: "Ring", 2: "Specks", 3: "Absent"}


def label_map() -> np.ndarray:
    """Holes, islands, several blobs per slice, border contact, single and diagonal voxels."""
    lab = np.zeros(SHAPE, np.uint8)
    lab[3:15, 2:14, 1] = 1
    lab[6:12, 5:11, 1] = 0          # a hole
    lab[8:10, 7:9, 1] = 1           # an island in the hole
    lab[0:4, 15:20, 1] = 1          # touches two borders of the grid
    lab[:, :, 2] = sphere_label(SHAPE[:2], center=(8, 8), radius=6)
    lab[17:22, 3:9, 2] = 1          # a second blob on the slice
    lab[0, 0, 3] = lab[23, 19, 3] = 2   # single voxels in the corners
    lab[10, 10, 3] = lab[11, 11, 3] = 2  # touching only diagonally
    lab[5, 5, 0] = 2
    return lab


def source(tmp_path: Path, affine: np.ndarray) -> Volume:
    write_series(tmp_path / "series", np.full(SHAPE, 100, np.int16), affine)
    return read_volume(tmp_path / "series")


def headers(image: Volume) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in image.meta["dicom_files"]]


@pytest.mark.parametrize("affine", [
    make_affine((0.7, 0.8, 2.0), "LPS", (15, -5, 20), (10.0, -20.0, 30.0)),
    make_affine((1.1, 0.9, 3.0), "ASR", (0, 8, -3)),  # sagittal slices, oblique too
], ids=["oblique-axial", "oblique-sagittal"])
def test_independent_rasteriser_gives_the_label_map_back(tmp_path, affine):
    image = source(tmp_path, affine)
    labels = image.with_array(label_map()[None])
    write_rtstruct(labels, tmp_path / "rs.dcm", NAMES)
    drawn = rasterize(pydicom.dcmread(tmp_path / "rs.dcm"), headers(image))
    assert set(drawn) == {"Ring", "Specks", "Absent"}
    for value, name in ((1, "Ring"), (2, "Specks"), (3, "Absent")):
        np.testing.assert_array_equal(drawn[name], labels.array[0] == value, err_msg=name)
    back = read_annotation(tmp_path / "rs.dcm", image)  # medseg's own reader agrees
    np.testing.assert_array_equal(back.labels.array, labels.array)
    assert back.empty == ("Absent",)


def test_contours_reference_the_slice_images_they_lie_on(tmp_path):
    image = source(tmp_path, make_affine((0.7, 0.8, 2.0), "LPS", (15, -5, 20)))
    write_rtstruct(image.with_array(label_map()[None]), tmp_path / "rs.dcm", NAMES,
                   colors={2: (1, 2, 3)})
    ds = pydicom.dcmread(tmp_path / "rs.dcm")
    ordered, g = series_geometry(headers(image))
    by_uid = {h.SOPInstanceUID: h for h in ordered}
    assert ds.Modality == "RTSTRUCT" and ds.FrameOfReferenceUID == ordered[0].FrameOfReferenceUID
    series = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]\
        .RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == image.meta["series_uid"]
    assert {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence} == set(by_uid)
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["Ring", "Specks", "Absent"]
    colors = [list(r.ROIDisplayColor) for r in ds.ROIContourSequence]
    assert colors == [list(DEFAULT_COLORS[0]), [1, 2, 3], list(DEFAULT_COLORS[2])]
    assert "ContourSequence" not in ds.ROIContourSequence[2]  # an empty ROI has no contours
    for roi in ds.ROIContourSequence[:2]:
        for contour in roi.ContourSequence:
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            assert len(points) == contour.NumberOfContourPoints
            slice_header = by_uid[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
            depth = (points - np.asarray(slice_header.ImagePositionPatient, float)) @ g["normal"]
            np.testing.assert_allclose(depth, 0, atol=1e-3)


@requires_dciodvfy
def test_dciodvfy_finds_no_error(tmp_path):
    image = source(tmp_path, make_affine((0.7, 0.8, 2.0), "LPS", (15, -5, 20)))
    write_rtstruct(image.with_array(label_map()[None]), tmp_path / "rs.dcm", NAMES)
    assert dciodvfy_errors(tmp_path / "rs.dcm") == []


def test_refuses_unnamed_values_and_non_dicom_sources(tmp_path):
    image = source(tmp_path, make_affine((0.7, 0.8, 2.0)))
    with pytest.raises(OutputError, match=r"\[2\]"):
        write_rtstruct(image.with_array(label_map()[None]), tmp_path / "rs.dcm",
                       {0: "background", 1: "Ring"})
    nifti = Volume(label_map()[None], image.affine, {"source": "x.nii.gz"})
    with pytest.raises(OutputError, match="DICOM source"):
        write_rtstruct(nifti, tmp_path / "rs.dcm", NAMES)
    assert not (tmp_path / "rs.dcm").exists()

"""Reading RT Structure Sets onto synthetic (oblique) series: holes, several contours per
slice, point/line contours, empty ROIs, names, overlaps and geometry errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from medseg.core import Volume
from medseg.core.errors import GeometryError, InputError, ReadError
from medseg.io import Structure, read_annotation, read_volume
from medseg.io.rtstruct import read_rtstruct
from tests.conftest import make_affine
from tests.io.dicom_factory import save_series, series_datasets
from tests.io.rtstruct_factory import FakeContour, FakeRoi, rectangle, save, structure_set

SHAPE = (20, 16, 6)
OBLIQUE = make_affine((0.8, 0.9, 2.5), "LPS", (12, -4, 7), (-30.0, 12.0, 40.0))


def box(i0: float, i1: float, j0: float, j1: float, k: int) -> np.ndarray:
    """Expected mask of ``rectangle(i0, i1, j0, j1)`` on slice k (half-integer corners)."""
    mask = np.zeros(SHAPE, bool)
    mask[int(np.ceil(i0)):int(np.floor(i1)) + 1, int(np.ceil(j0)):int(np.floor(j1)) + 1, k] = 1
    return mask


@pytest.fixture
def series(tmp_path: Path):
    """The synthetic series' datasets (k order), written to ``tmp_path/CT``."""
    data = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE) % 300
    datasets = series_datasets(data, OBLIQUE, description="CT synthetic")
    save_series(datasets, tmp_path / "study" / "CT")
    return datasets


def write_rs(tmp_path: Path, series, rois, name: str = "rs.dcm") -> Path:
    return save(structure_set(series, rois), tmp_path / "study" / "RTSTRUCT" / name)


def test_holes_islands_and_several_contours_per_slice(tmp_path, series):
    ring = [
        FakeContour(2, rectangle(2.5, 12.5, 3.5, 11.5)),   # outer outline
        FakeContour(2, rectangle(5.5, 9.5, 5.5, 9.5)),     # a hole in it
        FakeContour(2, rectangle(6.5, 7.5, 6.5, 8.5)),     # an island inside the hole
        FakeContour(2, rectangle(15.5, 18.5, 1.5, 4.5)),   # a second blob, same slice
        FakeContour(4, np.array([[3.5, 2.5], [10.0, 2.5], [3.5, 9.0]])),  # a triangle
    ]
    path = write_rs(tmp_path, series, [FakeRoi("Ring", ring)])
    result = read_rtstruct(path, tmp_path / "study" / "CT")
    expected = (box(2.5, 12.5, 3.5, 11.5, 2) & ~box(5.5, 9.5, 5.5, 9.5, 2)
                | box(6.5, 7.5, 6.5, 8.5, 2) | box(15.5, 18.5, 1.5, 4.5, 2))
    i, j = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    expected[:, :, 4] = (i >= 4) & (j >= 3) & (i + j <= 12)  # the triangle's centres
    assert result.labels.array.shape == (1, *SHAPE)
    np.testing.assert_array_equal(result.labels.array[0] == 1, expected)
    assert result.names == {0: "background", 1: "Ring"}
    np.testing.assert_allclose(result.labels.affine, OBLIQUE, atol=1e-4)


def test_the_image_series_is_found_in_the_folder_tree(tmp_path, series):
    path = write_rs(tmp_path, series, [FakeRoi("A", [FakeContour(1, rectangle(1.5, 4.5, 1.5,
                                                                                  4.5))])])
    found = read_annotation(path)  # RTSTRUCT/ is a sibling of CT/
    given = read_rtstruct(path, read_volume(tmp_path / "study" / "CT"))
    np.testing.assert_array_equal(found.labels.array, given.labels.array)
    assert found.reference_series == series[0].SeriesInstanceUID
    assert found.labels.meta["format"] == "rtstruct"


def test_values_follow_roi_order_or_the_given_names(tmp_path, series):
    rois = [FakeRoi("Lung_L", [FakeContour(1, rectangle(1.5, 3.5, 1.5, 3.5))]),
            FakeRoi("GTV-1", [FakeContour(2, rectangle(1.5, 3.5, 1.5, 3.5))]),
            FakeRoi("GTV 2", [FakeContour(3, rectangle(1.5, 3.5, 1.5, 3.5))]),
            FakeRoi("couch", [FakeContour(4, rectangle(1.5, 3.5, 1.5, 3.5))])]
    path = write_rs(tmp_path, series, rois)
    plain = read_rtstruct(path)
    assert plain.names == {0: "background", 1: "Lung_L", 2: "GTV-1", 3: "GTV 2", 4: "couch"}
    assert [int(plain.labels.array[0, 2, 2, k]) for k in (1, 2, 3, 4)] == [1, 2, 3, 4]
    chosen = read_rtstruct(path, structures=[Structure("GTV", ("/^gtv/",)), "lung-l", "Heart"])
    assert chosen.names == {0: "background", 1: "GTV", 2: "lung-l", 3: "Heart"}
    assert chosen.sources == {1: ("GTV-1", "GTV 2"), 2: ("Lung_L",)}
    assert chosen.missing == ("Heart",) and chosen.unmatched == ("couch",)
    assert [int(chosen.labels.array[0, 2, 2, k]) for k in (1, 2, 3, 4)] == [2, 1, 1, 0]
    assert 3 not in np.unique(chosen.labels.array)  # a missing structure paints nothing


def test_points_and_lines_are_skipped_with_a_warning_and_empty_rois_listed(
        tmp_path, series, caplog):
    rois = [FakeRoi("Marker", [FakeContour(1, np.array([[4.0, 4.0]]), kind="POINT")]),
            FakeRoi("Line", [FakeContour(1, np.array([[1.0, 1.0], [9.0, 9.0]]),
                                         kind="OPEN_PLANAR"),
                             FakeContour(3, rectangle(1.5, 3.5, 1.5, 3.5))]),
            FakeRoi("Planned")]
    path = write_rs(tmp_path, series, rois)
    with caplog.at_level(logging.WARNING):
        result = read_rtstruct(path)
    assert result.names == {0: "background", 1: "Marker", 2: "Line", 3: "Planned"}
    assert result.empty == ("Marker", "Planned")
    assert len(result.skipped) == 2 and "POINT" in result.skipped[0]
    assert "point/line contour" in caplog.text
    np.testing.assert_array_equal(result.labels.array[0] == 2, box(1.5, 3.5, 1.5, 3.5, 3))
    assert result.sidecar()["empty"] == ["Marker", "Planned"]


def test_overlap_policies_and_one_mask_per_structure(tmp_path, series):
    body, tumour = box(0.5, 15.5, 0.5, 13.5, 2), box(4.5, 6.5, 4.5, 6.5, 2)
    rois = [FakeRoi("Tumour", [FakeContour(2, rectangle(4.5, 6.5, 4.5, 6.5))]),
            FakeRoi("Body", [FakeContour(2, rectangle(0.5, 15.5, 0.5, 13.5))])]
    path = write_rs(tmp_path, series, rois)
    smaller = read_rtstruct(path).labels.array[0]  # default: the smaller structure wins
    np.testing.assert_array_equal(smaller == 1, tumour)
    np.testing.assert_array_equal(smaller == 2, body & ~tumour)
    later = read_rtstruct(path, overlap="later").labels.array[0]
    np.testing.assert_array_equal(later == 2, body)
    with pytest.raises(ReadError, match=r"structures overlap: 'Tumour' and 'Body' \(4 voxels\)"):
        read_rtstruct(path, overlap="error")
    masks = read_rtstruct(path, per_structure=True)
    assert masks.labels.array.shape == (2, *SHAPE) and masks.per_structure
    np.testing.assert_array_equal(masks.labels.array[0], tumour)
    np.testing.assert_array_equal(masks.labels.array[1], body)


def test_a_missing_referenced_slice_is_a_clear_error(tmp_path, series):
    path = write_rs(tmp_path, series, [FakeRoi("Cord", [
        FakeContour(1, rectangle(1.5, 3.5, 1.5, 3.5)),
        FakeContour(SHAPE[2] - 1, rectangle(1.5, 3.5, 1.5, 3.5))])])
    files = sorted((tmp_path / "study" / "CT").glob("*.dcm"))
    files[-1].unlink()  # the last slice: the series stays regular but lacks that image
    with pytest.raises(GeometryError, match=r"ROI 'Cord' contour 2 .*(missing slice)"):
        read_rtstruct(path)


def test_a_gap_in_the_series_is_a_clear_error(tmp_path, series):
    path = write_rs(tmp_path, series, [FakeRoi("Cord", [
        FakeContour(1, rectangle(1.5, 3.5, 1.5, 3.5))])])
    sorted((tmp_path / "study" / "CT").glob("*.dcm"))[3].unlink()
    with pytest.raises(GeometryError, match="missing slice"):
        read_rtstruct(path)


def test_contours_off_the_slices_or_on_another_image_are_refused(tmp_path, series):
    off = write_rs(tmp_path, series, [FakeRoi("Off", [
        FakeContour(2, rectangle(1.5, 3.5, 1.5, 3.5), depth=0.5)])], "off.dcm")
    with pytest.raises(GeometryError, match="not in a slice plane"):
        read_rtstruct(off)
    elsewhere = write_rs(tmp_path, series, [FakeRoi("Moved", [
        FakeContour(2, rectangle(1.5, 3.5, 1.5, 3.5), image_uid=series[4].SOPInstanceUID)])],
        "moved.dcm")
    with pytest.raises(GeometryError, match=r"names image .* \(slice 4\) but lies at slice 2"):
        read_rtstruct(elsewhere)


def test_small_offsets_from_the_slice_plane_are_tolerated(tmp_path, series):
    path = write_rs(tmp_path, series, [FakeRoi("A", [
        FakeContour(2, rectangle(1.5, 3.5, 1.5, 3.5), depth=0.02)])])
    np.testing.assert_array_equal(read_rtstruct(path).labels.array[0] == 1,
                                  box(1.5, 3.5, 1.5, 3.5, 2))


def test_another_frame_of_reference_is_refused(tmp_path, series):
    path = write_rs(tmp_path, series, [FakeRoi("A", [FakeContour(1, rectangle(1.5, 3.5, 1.5,
                                                                                  3.5))])])
    image = read_volume(tmp_path / "study" / "CT")
    other = Volume(image.array, image.affine, {**image.meta, "frame_of_reference_uid": "1.2.3"})
    with pytest.raises(GeometryError, match="frame of reference"):
        read_rtstruct(path, other)


def test_no_series_to_read_onto_and_wrong_files(tmp_path, series):
    lonely = save(structure_set(series, [FakeRoi("A")]), tmp_path / "x" / "y" / "z" / "rs.dcm")
    with pytest.raises(InputError, match="--reference"):
        read_rtstruct(lonely)
    with pytest.raises(ReadError, match="not an RT Structure Set"):
        read_rtstruct(sorted((tmp_path / "study" / "CT").glob("*.dcm"))[0])
    with pytest.raises(ReadError, match="not an annotation file"):
        read_annotation(sorted((tmp_path / "study" / "CT").glob("*.dcm"))[0])

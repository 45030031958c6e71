"""DICOM studies labelled by RTSTRUCT or DICOM-SEG files become datasets: each file on the
series it was drawn on, ROI names matched through aliases, missing structures absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.core.errors import DatasetError
from medseg.data import (
    Dataset,
    describe_dataset,
    load_dataset,
    read_case,
    validate_dataset,
)
from medseg.io import Structure, read_volume
from tests.conftest import make_affine
from tests.io.dicom_factory import save_series, series_datasets
from tests.io.rtstruct_factory import FakeContour, FakeRoi, rectangle, save, structure_set
from tests.io.seg_factory import highdicom_seg

SHAPE = (16, 14, 5)
GRID = make_affine((0.9, 0.9, 3.0), "LPS", (8, 0, -4), (-20.0, 10.0, 5.0))
LUNG = rectangle(1.5, 6.5, 1.5, 9.5)
TUMOUR = rectangle(3.5, 4.5, 3.5, 5.5)
STRUCTURES = [Structure("Lung-Left", ("/^lung.?l(eft)?$/",)), Structure("GTV", ("/^gtv/",)),
              Structure("Heart")]


def write_ct(root: Path, study: str, number: int, description: str = "CT") -> list:
    data = (np.indices(SHAPE).sum(0) * 7 % 400).astype(np.int16)
    datasets = series_datasets(data, GRID, description=description)
    for ds in datasets:
        ds.Modality = "CT"
        ds.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.{700 + number}"
        ds.FrameOfReferenceUID = ds.StudyInstanceUID + ".1"
    save_series(datasets, root / study / description)
    return datasets


@pytest.fixture
def rt_studies(tmp_path: Path) -> Path:
    """Two patients; their centres spell the ROIs differently; B has no tumour contour."""
    a = write_ct(tmp_path, "Patient-A", 1)
    save(structure_set(a, [FakeRoi("Lung_L", [FakeContour(2, LUNG)]),
                           FakeRoi("GTV-1", [FakeContour(2, TUMOUR)]),
                           FakeRoi("couch", [FakeContour(0, LUNG)])]),
         tmp_path / "Patient-A" / "RTSTRUCT" / "rs.dcm")
    b = write_ct(tmp_path, "Patient-B", 2)
    save(structure_set(b, [FakeRoi("LUNG LEFT", [FakeContour(3, LUNG)]),
                           FakeRoi("Heart", [FakeContour(1, TUMOUR)])]),
         tmp_path / "Patient-B" / "RTSTRUCT" / "rs.dcm")
    return tmp_path


def expected(rect: np.ndarray, k: int) -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    (i0, j0), (i1, j1) = rect.min(0), rect.max(0)
    mask[int(np.ceil(i0)):int(i1) + 1, int(np.ceil(j0)):int(j1) + 1, k] = True
    return mask


def test_rtstruct_studies_become_cases_with_aliases(rt_studies):
    ds = load_dataset(rt_studies, label_source="rtstruct", structures=STRUCTURES)
    assert ds.labels == {0: "background", 1: "Lung-Left", 2: "GTV", 3: "Heart"}
    assert ds.channels == {0: "CT"}
    assert [c.case_id for c in ds.cases] == ["Patient-A", "Patient-B"]
    a, b = ds.cases
    assert a.label_rois == ((1, "Lung_L"), (2, "GTV-1")) and a.label_format == "rtstruct"
    assert b.label_rois == ((1, "LUNG LEFT"), (3, "Heart"))
    image, label = read_case(a)
    assert image.same_grid(label) and image.meta["modality"] == "CT"
    np.testing.assert_array_equal(label.array[0] == 2, expected(TUMOUR, 2))
    np.testing.assert_array_equal(label.array[0] == 1, expected(LUNG, 2) & ~expected(TUMOUR, 2))
    _, label_b = read_case(b)
    assert 2 not in np.unique(label_b.array)  # no GTV drawn: absent, not background-painted
    np.testing.assert_array_equal(label_b.array[0] == 3, expected(TUMOUR, 1))
    assert len(validate_dataset(ds, progress=False).valid) == 2


def test_describe_lists_which_structure_came_from_which_file(rt_studies):
    lines = describe_dataset(load_dataset(rt_studies, label_source="rtstruct",
                                          structures=STRUCTURES))
    assert len(lines) == 2
    assert "Patient-A/RTSTRUCT/rs.dcm" in lines[0]
    assert "1 Lung-Left <- 'Lung_L'" in lines[0] and "2 GTV <- 'GTV-1'" in lines[0]
    assert "missing Heart" in lines[0] and "missing GTV" in lines[1]


def test_the_listing_keeps_what_each_file_gave(rt_studies):
    ds = load_dataset(rt_studies, label_source="rtstruct", structures=STRUCTURES)
    again = Dataset.from_dict(ds.to_dict())
    assert again.cases == ds.cases
    np.testing.assert_array_equal(read_case(again.cases[0])[1].array,
                                  read_case(ds.cases[0])[1].array)


def test_without_structures_the_names_every_file_has_are_used(rt_studies):
    save(structure_set(series_of(rt_studies / "Patient-B" / "CT"), [
        FakeRoi("lung-l", [FakeContour(3, LUNG)])]), rt_studies / "Patient-B" / "RTSTRUCT" /
        "rs.dcm")
    ds = load_dataset(rt_studies, label_source="rtstruct")
    assert ds.labels == {0: "background", 1: "Lung_L"}
    assert [c.label_rois for c in ds.cases] == [((1, "Lung_L"),), ((1, "lung-l"),)]


def series_of(folder: Path) -> list:
    import pydicom

    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*"))]
    return sorted(headers, key=lambda h: int(h.InstanceNumber))


def test_files_without_any_structure_are_skipped_and_none_is_an_error(rt_studies):
    ds = load_dataset(rt_studies, label_source="rtstruct", structures=["Heart"])
    assert [c.case_id for c in ds.cases] == ["Patient-B"]
    with pytest.raises(DatasetError, match="no rtstruct file has one of the structures"):
        load_dataset(rt_studies, label_source="rtstruct", structures=["Liver"])
    with pytest.raises(DatasetError, match="no dicom-seg file found"):
        load_dataset(rt_studies, label_source="dicom-seg")


def test_channels_are_series_on_the_grid_of_the_drawn_one(rt_studies):
    write_ct(rt_studies, "Patient-A", 1, description="CT contrast")
    ds = load_dataset(rt_studies, label_source="rtstruct", structures=STRUCTURES,
                      channels=["CT", "CT contrast"])
    assert ds.channels == {0: "CT", 1: "CT contrast"}
    assert [c.case_id for c in ds.cases] == ["Patient-A"]  # B has no contrast series
    image, _ = read_case(ds.cases[0])
    assert image.n_channels == 2


def test_dicom_seg_studies(tmp_path):
    write_ct(tmp_path, "P1", 1)
    image = read_volume(tmp_path / "P1" / "CT")
    masks = np.stack([expected(LUNG, 2), expected(TUMOUR, 3)])
    highdicom_seg(image, masks, tmp_path / "P1" / "SEG" / "seg.dcm", labels=("Lung L", "GTV-1"))
    ds = load_dataset(tmp_path, label_source="dicom-seg", structures=STRUCTURES)
    assert [c.label_rois for c in ds.cases] == [((1, "Lung L"), (2, "GTV-1"))]
    _, label = read_case(ds.cases[0])
    np.testing.assert_array_equal(label.array[0], masks[0] * 1 + masks[1] * 2)


def test_label_source_needs_dicom_studies(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(DatasetError, match="needs a folder of DICOM studies"):
        load_dataset(tmp_path / "x", label_source="rtstruct")
    with pytest.raises(DatasetError, match="unknown label source"):
        load_dataset(tmp_path / "x", label_source="contours")

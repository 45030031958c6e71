"""DICOM studies: image series are paired with the mask series on their grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.core.errors import DatasetError
from medseg.data import describe_pairs, load_dataset, read_case, validate_dataset
from tests.conftest import make_affine, sphere_label
from tests.io.dicom_factory import save_series, series_datasets

SHAPE = (12, 10, 6)


def write_study(root: Path, study: str, series: dict[str, np.ndarray], number: int) -> None:
    """One folder per series; ``series`` maps description -> affine (int16 sphere data)."""
    for n, (description, affine) in enumerate(series.items()):
        data = sphere_label(SHAPE).astype(np.int16)
        data = data * 255 if "Mask" in description else data * 100 + 20 + n
        datasets = series_datasets(data, affine, description=description)
        for ds in datasets:
            ds.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.{100 + number}"
            ds.FrameOfReferenceUID = ds.StudyInstanceUID + ".1"
        save_series(datasets, root / study / f"{n}-{description}")


@pytest.fixture
def studies(tmp_path) -> Path:
    grid = make_affine((0.8, 0.8, 3.0), "LPS", oblique_degrees=(10, 0, 5))
    shifted = grid.copy()
    shifted[:3, 3] += 4.0
    write_study(tmp_path, "StudyA", {"T1": grid, "FLAIR": grid, "Mask_Tumor": grid,
                                     "Localizer": make_affine((2, 2, 2))}, number=1)
    write_study(tmp_path, "StudyB", {"T1": grid, "FLAIR": shifted, "MaskTumor": grid},
                number=2)
    return tmp_path


def test_pairs_follow_frame_of_reference_and_grid(studies):
    ds = load_dataset(studies)
    assert ds.channels == {0: "T1"}  # FLAIR of StudyB is on another grid
    assert [c.case_id for c in ds.cases] == ["StudyA", "StudyB"]
    assert ds.labels[1] == "Mask_Tumor"
    for case in ds.cases:
        assert case.label is not None and "Mask" in case.label.name
        image, label = read_case(case)
        assert image.same_grid(label)
        assert np.array_equal(label.array[0] > 0, image.array[0] > 50)
        assert set(np.unique(label.array)) == {0, 1}  # the 0/255 mask becomes label 1
    lines = describe_pairs(ds)
    assert len(lines) == 2 and all("T1=" in line for line in lines)
    assert len(validate_dataset(ds, progress=False).valid) == 2


def test_requested_channels_skip_studies_without_them(studies):
    ds = load_dataset(studies, channels=["T1", "FLAIR"])
    assert ds.channels == {0: "T1", 1: "FLAIR"}
    assert [c.case_id for c in ds.cases] == ["StudyA"]
    image, _ = read_case(ds.cases[0])
    assert image.n_channels == 2


def test_unknown_mask_pattern_lists_series(studies):
    with pytest.raises(DatasetError, match="Localizer"):
        load_dataset(studies, mask_pattern="Segmentation")

"""The shared LUNG1-001 CT and its clinical RTSTRUCT (NSCLC-Radiomics): reading agrees with
the independent rasterisation shipped beside it, and a label map written as RTSTRUCT is
given back by an independent rasteriser (``tests/io/even_odd.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.core import Volume
from medseg.io import read_annotation, read_volume
from medseg.io.dicom_seg import write_dicom_seg
from medseg.io.rtstruct_write import write_rtstruct
from tests.conftest import DICOM_ROOT
from tests.io.dciodvfy import dciodvfy_errors, requires_dciodvfy
from tests.io.even_odd import dice, rasterize

LUNG1 = DICOM_ROOT / "ct_lung_rtstruct" / "LUNG1-001"
REFERENCE = LUNG1 / "reference_labels_independent_rasterizer.nii.gz"
#: the shipped reference's values, GTV-1 painted last (the smallest: medseg's default too)
STRUCTURES = {1: "Lung-Left", 2: "Lung-Right", 3: "Spinal-Cord", 4: "GTV-1"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not REFERENCE.is_file(), reason=f"LUNG1-001 data not present at {LUNG1}"),
]


@pytest.fixture(scope="module")
def ct() -> Volume:
    return read_volume(LUNG1 / "CT")


@pytest.fixture(scope="module")
def reference(ct: Volume) -> Volume:
    ref = read_volume(REFERENCE)
    assert ref.same_grid(ct)
    return ct.with_array(ref.array)


def test_reading_agrees_with_the_independent_rasterisation(reference):
    result = read_annotation(LUNG1 / "RTSTRUCT" / "1-1.dcm", structures=STRUCTURES)
    assert result.labels.same_grid(reference)
    for value, name in STRUCTURES.items():
        score = dice(result.labels.array[0] == value, reference.array[0] == value)
        assert score >= 0.95, f"{name}: Dice {score:.4f}"


def test_written_rtstruct_is_given_back_by_an_independent_rasteriser(reference, tmp_path):
    write_rtstruct(reference, tmp_path / "rs.dcm", {0: "background", **STRUCTURES})
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in reference.meta["dicom_files"]]
    drawn = rasterize(pydicom.dcmread(tmp_path / "rs.dcm"), headers)
    for value, name in STRUCTURES.items():
        score = dice(drawn[name], reference.array[0] == value)
        assert score >= (0.90 if name == "GTV-1" else 0.95), f"{name}: Dice {score:.4f}"


@requires_dciodvfy
@pytest.mark.parametrize("fmt", ["rtstruct", "dicom-seg"])
def test_dciodvfy_finds_no_error_on_a_real_ct(reference, tmp_path, fmt):
    write = write_rtstruct if fmt == "rtstruct" else write_dicom_seg
    path: Path = tmp_path / f"{fmt}.dcm"
    write(reference, path, {0: "background", **STRUCTURES})
    assert dciodvfy_errors(path) == []


def test_one_mask_per_structure_keeps_the_tumour_inside_the_lung(reference):
    result = read_annotation(LUNG1 / "RTSTRUCT" / "1-1.dcm", reference, structures=STRUCTURES,
                             per_structure=True)
    masks = result.labels.array.astype(bool)
    assert masks.shape[0] == 4
    overlap = masks[0] & masks[3]  # GTV-1 drawn over Lung-Left: both keep those voxels
    assert overlap.sum() > 0
    assert np.array_equal(masks[3], reference.array[0] == 4)

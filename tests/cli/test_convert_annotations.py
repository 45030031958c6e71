"""``medseg convert`` between annotation files (RTSTRUCT, DICOM-SEG) and label maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.cli.main import main
from medseg.core.errors import EXIT_BAD_INPUT, EXIT_OK
from medseg.io import read_annotation, read_volume, write_volume
from tests.conftest import make_affine
from tests.io.dicom_factory import save_series, series_datasets
from tests.io.rtstruct_factory import FakeContour, FakeRoi, rectangle, save, structure_set

SHAPE = (12, 10, 4)
AFFINE = make_affine((0.8, 0.9, 2.0), "LPS", (5, 10, 0), (1.0, 2.0, 3.0))


@pytest.fixture
def study(tmp_path: Path) -> Path:
    datasets = series_datasets(np.full(SHAPE, 30, np.int16), AFFINE)
    save_series(datasets, tmp_path / "study" / "MR")
    rois = [FakeRoi("Body", [FakeContour(1, rectangle(0.5, 9.5, 0.5, 8.5))]),
            FakeRoi("Target", [FakeContour(1, rectangle(3.5, 5.5, 3.5, 5.5))]),
            FakeRoi("Marker", [FakeContour(2, np.array([[3.0, 3.0]]), kind="POINT")])]
    save(structure_set(datasets, rois), tmp_path / "study" / "RS" / "rs.dcm")
    return tmp_path / "study"


def test_rtstruct_to_nifti_with_sidecar(study, tmp_path, capsys):
    out = tmp_path / "out" / "labels.nii.gz"
    assert main(["convert", str(study / "RS" / "rs.dcm"), str(out)]) == EXIT_OK
    labels = read_volume(out)
    np.testing.assert_allclose(labels.affine, read_volume(study / "MR").affine, atol=1e-4)
    assert labels.array[0, 4, 4, 1] == 2 and labels.array[0, 1, 1, 1] == 1
    sidecar = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert sidecar["labels"] == {"0": "background", "1": "Body", "2": "Target", "3": "Marker"}
    assert sidecar["empty"] == ["Marker"] and len(sidecar["skipped"]) == 1
    assert "empty: Marker" in capsys.readouterr().out


def test_names_and_one_mask_per_structure(study, tmp_path):
    out = tmp_path / "masks.nii.gz"
    assert main(["convert", str(study / "RS" / "rs.dcm"), str(out), "--names", "Target",
                 "Outline=body", "--per-structure", "--reference", str(study / "MR")]) == EXIT_OK
    masks = read_volume(out)
    assert masks.n_channels == 2
    assert masks.array[0].sum() == 2 * 2 and masks.array[1].sum() == 9 * 8  # Target, Outline
    sidecar = json.loads((tmp_path / "masks.json").read_text())
    assert sidecar["per_structure"] and sidecar["unmatched"] == ["Marker"]


@pytest.mark.parametrize("fmt", ["rtstruct", "dicom-seg"])
def test_label_map_to_dicom_and_back(study, tmp_path, fmt):
    labels = tmp_path / "labels.nii.gz"
    assert main(["convert", str(study / "RS" / "rs.dcm"), str(labels)]) == EXIT_OK
    out = tmp_path / "dicom"
    assert main(["convert", str(labels), str(out), "--format", fmt,
                 "--reference", str(study / "MR")]) == EXIT_OK
    (written,) = out.iterdir()
    assert written.name == ("labels_rtstruct.dcm" if fmt == "rtstruct" else "labels.dcm")
    ds = pydicom.dcmread(written, stop_before_pixels=True)
    names = ([r.ROIName for r in ds.StructureSetROISequence] if fmt == "rtstruct"
             else [s.SegmentLabel for s in ds.SegmentSequence])
    assert names == ["Body", "Target", "Marker"]  # from the sidecar next to the labels
    back = read_annotation(written, study / "MR", overlap="later")
    np.testing.assert_array_equal(back.labels.array, read_volume(labels).array)


def test_label_map_output_needs_a_reference_on_its_grid(study, tmp_path, capsys):
    labels = tmp_path / "labels.nii.gz"
    write_volume(read_volume(study / "MR").with_array(np.ones((1, *SHAPE), np.uint8)), labels)
    assert main(["convert", str(labels), str(tmp_path / "o"), "--format", "rtstruct"]) \
        == EXIT_BAD_INPUT
    assert "--reference" in capsys.readouterr().err
    shifted = tmp_path / "shifted.nii.gz"
    volume = read_volume(labels)
    moved = volume.affine.copy()
    moved[:3, 3] += 2.0
    write_volume(type(volume)(volume.array, moved), shifted)
    assert main(["convert", str(shifted), str(tmp_path / "o"), "--format", "rtstruct",
                 "--reference", str(study / "MR")]) == EXIT_BAD_INPUT
    assert "not on the grid of the reference series" in capsys.readouterr().err

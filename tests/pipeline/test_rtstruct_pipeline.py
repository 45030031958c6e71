"""A pipeline trains from a tiny synthetic DICOM study labelled by RTSTRUCT files (ROI names
spelled differently per patient) and writes its held-out predictions as RTSTRUCT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.io import read_annotation
from medseg.pipeline import run_pipeline
from tests.conftest import make_affine
from tests.io.dicom_factory import save_series, series_datasets
from tests.io.rtstruct_factory import FakeContour, FakeRoi, rectangle, save, structure_set
from tests.pipeline.test_end_to_end import TINY

SHAPE = (24, 24, 8)
GRID = make_affine((1.5, 1.5, 3.0), "LPS", (0, 0, 6))
SPELLINGS = [("Organ", "GTV-1"), ("ORGAN_1", "gtv primary"), ("organ", None)]


def write_study(root: Path, n: int, organ_name: str, tumour_name: str | None) -> None:
    image = np.full(SHAPE, 40, np.int16)
    image[5:17, 6:18, 2:6] = 200   # the organ
    image[9:12, 9:13, 3:5] = 600   # the tumour inside it
    datasets = series_datasets(image + n, GRID, description="CT")
    for ds in datasets:
        ds.Modality = "CT"
        ds.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.{900 + n}"
        ds.FrameOfReferenceUID = ds.StudyInstanceUID + ".1"
    save_series(datasets, root / f"Patient-{n}" / "CT")
    rois = [FakeRoi(organ_name, [FakeContour(k, rectangle(4.5, 16.5, 5.5, 17.5))
                                 for k in range(2, 6)])]
    if tumour_name:
        rois.append(FakeRoi(tumour_name, [FakeContour(k, rectangle(8.5, 11.5, 8.5, 12.5))
                                          for k in (3, 4)]))
    save(structure_set(datasets, rois), root / f"Patient-{n}" / "RTSTRUCT" / "rs.dcm")


@pytest.mark.slow
def test_pipeline_trains_from_rtstruct_studies(tmp_path):
    for n, (organ, tumour) in enumerate(SPELLINGS):
        write_study(tmp_path / "data", n, organ, tumour)
    pipe = tmp_path / "rt.yaml"
    pipe.write_text(
        "name: rt\n"
        "dataset:\n  path: data\n  label_source: rtstruct\n  holdout_fraction: 0.34\n"
        "  structures:\n    Organ: ['/^organ/']\n    Tumour: ['/^gtv/']\n"
        "train:\n  configuration: 3d\n  folds: [all]\n"
        "predict:\n  format: rtstruct\n")
    run = tmp_path / "run"
    result = run_pipeline(pipe, workdir=run, overrides=TINY)
    assert [o.action for o in result.outcomes] == ["ran"] * 6

    listing = json.loads((run / "dataset.json").read_text())
    assert listing["labels"] == {"0": "background", "1": "Organ", "2": "Tumour"}
    rois = {c["case_id"]: c["label_rois"] for c in listing["cases"]}
    assert rois["Patient-1"] == [[1, "ORGAN_1"], [2, "gtv primary"]]
    assert rois["Patient-2"] == [[1, "organ"]]  # no tumour drawn: absent, not background
    (held,) = json.loads((run / "holdout.json").read_text())["cases"]
    (written,) = (run / "predictions" / "rtstruct").iterdir()
    assert written.name == f"{held}_rtstruct.dcm"
    assert pydicom.dcmread(written).Modality == "RTSTRUCT"
    back = read_annotation(written, tmp_path / "data" / held / "CT")
    assert back.labels.spatial_shape == SHAPE
    assert back.names == {0: "background", 1: "Organ", 2: "Tumour"}
    assert result.summary_file.is_file()

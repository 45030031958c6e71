"""The real stages on the bundled sample data (a few seconds of training)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.io import read_volume
from medseg.pipeline import StageContext, StageResult, demo_pipeline_file, run_pipeline
from medseg.pipeline import stages as stages_module
from medseg.pipeline.state import load_records

TINY = [
    "train.max_minutes=null", "train.epochs=2", "train.iterations_per_epoch=2",
    "train.validate_every=1", "preprocess.workers=1",
]


@pytest.mark.slow
def test_demo_pipeline_end_to_end(tmp_path: Path):
    run = tmp_path / "run"
    first = run_pipeline(demo_pipeline_file(), workdir=run, overrides=TINY)
    assert [o.action for o in first.outcomes] == ["ran"] * 6
    assert {r.status for r in load_records(run).values()} == {"done"}

    held_out = json.loads((run / "holdout.json").read_text())["cases"]
    assert len(held_out) == 2
    listing = json.loads((run / "dataset.json").read_text())
    for case in held_out:
        source = next(c for c in listing["cases"] if c["case_id"] == case)
        image = read_volume(source["images"][0])
        pred = read_volume(run / "predictions" / "holdout" / f"{case}.nii.gz")
        assert pred.spatial_shape == image.spatial_shape
        np.testing.assert_allclose(pred.affine, image.affine, atol=1e-5)
        assert set(np.unique(pred.array)) <= {0, 1, 2}
    (seg,) = (run / "predictions" / "extra").glob("*.dcm")  # the DICOM series, as DICOM-SEG
    assert pydicom.dcmread(seg).Modality == "SEG"
    assert (run / "predictions" / "extra" / f"{seg.stem}_uncertainty.json").is_file()

    summary = json.loads(first.summary_file.read_text())
    assert summary["n_cases"] == 2
    assert set(summary["per_class"]) == {"Anterior", "Posterior"}
    assert first.report.is_file()
    page = first.report.read_text()  # interactive, with the uncertainty, relative links only
    assert 'id="case-table"' in page and 'data-col="uncertainty"' in page
    assert str(tmp_path) not in page
    assert len(list((run / "evaluation" / "viewer" / "cases").glob("*.js"))) == 2
    resolved = (run / "config.resolved.yaml").read_text()
    assert "medseg_version:" in resolved and "epochs: 2" in resolved

    again = run_pipeline(demo_pipeline_file(), workdir=run, overrides=TINY)
    assert [o.action for o in again.outcomes] == ["skipped"] * 6


class Crash(KeyboardInterrupt):
    """Simulated Ctrl-C right after training wrote its checkpoints."""


@pytest.mark.slow
def test_interrupted_training_resumes(tmp_path: Path):
    run = tmp_path / "run"
    crashed: list[bool] = []

    def train_then_crash(ctx: StageContext) -> StageResult:
        result = stages_module.train(ctx)
        if not crashed:
            crashed.append(True)
            raise Crash
        return result

    crashing = [replace(s, run=train_then_crash) if s.name == "train" else s
                for s in stages_module.standard_stages()]
    with pytest.raises(Crash):
        run_pipeline(demo_pipeline_file(), workdir=run, overrides=TINY, stage_list=crashing)
    assert load_records(run)["train"].status == "running"
    again = run_pipeline(demo_pipeline_file(), workdir=run, overrides=TINY, stage_list=crashing)
    assert [o.action for o in again.outcomes] == [
        "skipped", "skipped", "skipped", "resumed", "ran", "ran"]
    (metrics,) = run.glob("train/*/fold_all/metrics.csv")
    rows = metrics.read_text().splitlines()
    assert len(rows) == 1 + 2  # header + the 2 epochs, not trained again

"""``medseg predict --report`` with DICOM input and DICOM-SEG output (the report reads the
label map back from the DICOM-SEG); the browser side is in tests/metrics."""

from __future__ import annotations

from pathlib import Path

from medseg.cli.main import main
from medseg.core import sidecars
from medseg.core.errors import EXIT_OK
from tests.inference.dicom_synth import write_dicom_series
from tests.inference.helpers import tiny_plan, write_run


def test_report_of_dicom_seg_predictions(tmp_path: Path, volume_factory):
    run = tmp_path / "run"
    write_run(run, tiny_plan(), folds=[0])
    series = tmp_path / "study" / "01_T2"
    write_dicom_series(volume_factory((10, 9, 8), (0.8, 0.8, 2.0), "LPS", (10, 5, 20),
                                      kind="sphere"), series, "T2")
    out = tmp_path / "out"
    assert main(["predict", "-m", str(run), "-i", str(series), "-o", str(out), "--format",
                 "dicom-seg", "--report", "--device", "cpu", "--no-progress"]) == EXIT_OK
    (seg,) = out.glob("*.dcm")
    assert sidecars.uncertainty_score_path(out, seg.stem).is_file()
    page = (out / "report" / "index.html").read_text()
    assert f'data-case="{seg.stem}"' in page and "Not in the report" not in page
    assert (out / "report" / "qc" / f"{seg.stem}.png").is_file()
    assert (out / "report" / "viewer" / "cases" / "00000.js").is_file()

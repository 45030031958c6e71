"""``medseg predict --report``: the review report of a finished batch (OUT/report/)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

from medseg.core import sidecars
from medseg.inference.batch import CaseResult, output_path
from medseg.inference.jobs import Job
from medseg.inference.predictor import Predictor
from medseg.io import read_annotation, read_volume
from medseg.metrics.review import ReviewCase, ReviewReport, write_review_report
from medseg.metrics.viewer_data import CaseLayers

REPORT_DIR = "report"


def write_prediction_report(
    predictor: Predictor, jobs: Sequence[Job], results: Sequence[CaseResult], out_dir: Path,
    formats: Sequence[str], progress: bool = True,
) -> ReviewReport:
    """Review report of every predicted (or already present) case of the batch; the label
    maps are read back from the NIfTI output, else from the first DICOM one."""
    by_name = {r.name: r for r in results}
    labels = {v: n for v, n in predictor.label_names.items() if v != 0}
    modality = predictor.plan.channels.get(0)
    fmt = "nifti" if "nifti" in formats else formats[0]
    cases = [
        ReviewCase(job.name, partial(_load_case, job, output_path(job, out_dir, fmt), out_dir,
                                     fmt, labels, modality),
                   sidecars.read_uncertainty_score(out_dir, job.name))
        for job in jobs if by_name[job.name].status != "failed"
    ]
    failed = {r.name: r.error or "failed" for r in results if r.status == "failed"}
    return write_review_report(out_dir / REPORT_DIR, cases, labels, model=predictor.describe(),
                               not_predicted=failed, progress=progress)


def _load_case(job: Job, output: Path, out_dir: Path, fmt: str, labels: dict[int, str],
               modality: str | None) -> CaseLayers:
    """One case's layers, read when its turn comes (one case in memory at a time)."""
    case = job.case
    series = case.image_series[0] if case.image_series else None
    image = read_volume(case.images[0], series, regularize=case.regularize)
    if fmt == "nifti":
        prediction = read_volume(output)
    else:  # DICOM-SEG or RTSTRUCT, onto the image's grid, structures by label name
        prediction = read_annotation(output, image, structures=labels).labels
    map_path = sidecars.uncertainty_map_path(out_dir, job.name)
    uncertainty = read_volume(map_path) if map_path.is_file() else None
    return CaseLayers(prediction, None, image, uncertainty, modality)

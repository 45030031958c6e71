"""Per-job memory estimates from headers, and batch options that respect a RAM budget
(``medseg predict --max-ram`` / ``--estimate``); the model is in :mod:`.memory`."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from medseg.core.errors import InputError
from medseg.inference.batch import BatchOptions
from medseg.inference.jobs import Job
from medseg.inference.memory import (
    GB,
    CaseEstimate,
    current_rss,
    overlap_fits,
    plan_case,
    workload,
)
from medseg.inference.predictor import Predictor
from medseg.io.header_info import ImageGeometry, read_geometry


@dataclass(frozen=True)
class BatchEstimate:
    """Estimates of every readable job, the jobs whose headers could not be read, and
    whether the batch may overlap reading/writing with prediction."""

    cases: tuple[CaseEstimate, ...]
    unreadable: tuple[tuple[str, str], ...]
    budget: int | None
    overlap: bool

    def text(self) -> str:
        lines = [case.line() for case in self.cases]
        lines += [f"{name}: cannot estimate ({reason})" for name, reason in self.unreadable]
        peak = max((c.peak for c in self.cases), default=0)
        budget = "no budget" if self.budget is None else f"budget {self.budget / GB:.2f} GB"
        windows = sum(c.windows for c in self.cases)
        lines.append(f"{len(self.cases)} case(s), {windows} window(s) in all; expected peak "
                     f"~{peak / GB:.2f} GB ({budget}; cases "
                     f"{'overlap reading/writing' if self.overlap else 'one at a time'})")
        return "\n".join(lines)


def job_geometry(job: Job) -> ImageGeometry:
    """The stacked geometry of a job's channels (headers only)."""
    series = job.case.image_series or (None,) * len(job.case.images)
    parts = [read_geometry(path, uid, regularize=job.case.regularize)
             for path, uid in zip(job.case.images, series, strict=True)]
    return ImageGeometry(parts[0].shape, parts[0].affine, sum(p.n_channels for p in parts),
                         max(p.itemsize for p in parts))


def estimate_jobs(predictor: Predictor, jobs: Sequence[Job], options: BatchOptions,
                  budget: int | None, disk_folder: str | Path | None = None) -> BatchEstimate:
    """Plan every job under ``budget`` bytes (None: defaults, no limit). Raises ConfigError
    naming the first case that cannot fit and how much it needs, before any work."""
    base = current_rss()
    folder = str(disk_folder) if disk_folder is not None else tempfile.gettempdir()
    cases, unreadable = [], []
    for job in jobs:
        try:
            geometry = job_geometry(job)
        except InputError as exc:  # the batch reports it as a failed case
            unreadable.append((job.name, str(exc)))
            continue
        work = workload(predictor, job.name, geometry,
                        with_probabilities=options.save_probabilities,
                        dicom_seg=options.format == "dicom-seg")
        cases.append(plan_case(work, budget, base, folder))
    return BatchEstimate(tuple(cases), tuple(unreadable), budget, overlap_fits(cases, budget))


def budgeted_options(options: BatchOptions, estimate: BatchEstimate) -> BatchOptions:
    """``options`` with each case's resources and the overlap decision of ``estimate``."""
    return replace(options, resources={c.name: c.resources for c in estimate.cases},
                   overlap=options.overlap and estimate.overlap)

"""Batch prediction: many jobs through one loaded model.

Reading + preprocessing of the next case runs in a background thread while the current
case is predicted, and writing runs in another, so the network rarely waits for I/O. A
failing case is recorded and the batch goes on; existing outputs are skipped unless
``overwrite``.
"""

from __future__ import annotations

import logging
import time
import zipfile
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medseg.core import Volume, sidecars
from medseg.core.atomic import atomic_path
from medseg.core.errors import MedsegError, OutputError
from medseg.core.paths import ensure_outside_inputs
from medseg.data import read_case
from medseg.inference.jobs import Job
from medseg.inference.memory import CaseResources, release_free_memory
from medseg.inference.predictor import Prediction, Predictor
from medseg.inference.uncertainty import (
    CaseUncertainty,
    predict_with_uncertainty,
    write_uncertainty,
)
from medseg.io import write_annotation, write_volume
from medseg.io.annotation import annotation_file_name
from medseg.preprocess.case import PreprocessedCase

log = logging.getLogger(__name__)

FORMATS = ("nifti", "dicom-seg", "rtstruct")
DICOM_FORMATS = ("dicom-seg", "rtstruct")  # need a DICOM input (they reference its images)


@dataclass(frozen=True)
class BatchOptions:
    """Output format(s), overwrite policy and whether to save probabilities / uncertainty."""

    format: str | tuple[str, ...] = "nifti"  # one format, or several written side by side
    overwrite: bool = False
    save_probabilities: bool = False
    progress: bool = True
    uncertainty: bool = False
    # per job name: accumulator, windows per forward and slab chosen for a RAM budget
    resources: Mapping[str, CaseResources] = field(default_factory=dict)
    overlap: bool = True  # read the next case and write the previous one in threads

    @property
    def formats(self) -> tuple[str, ...]:
        """The output formats; the first one's file is the result's ``output``."""
        return (self.format,) if isinstance(self.format, str) else tuple(self.format)


@dataclass(frozen=True)
class CaseResult:
    """Outcome of one job: ``ok``, ``skipped`` or ``failed`` (with the reason)."""

    name: str
    status: str
    output: Path
    shape: tuple[int, ...] = ()
    seconds: float = 0.0
    voxels: Mapping[int, int] = field(default_factory=dict)
    error: str | None = None


def output_path(job: Job, out_dir: Path, fmt: str) -> Path:
    """Where a job's label map goes (a NIfTI input keeps its file name)."""
    if fmt in DICOM_FORMATS:
        return out_dir / annotation_file_name(job.name, fmt)
    return out_dir / (job.keep_file_name or f"{job.name}.nii.gz")


def probabilities_path(job: Job, out_dir: Path) -> Path:
    return out_dir / f"{job.name}_probabilities.npz"


def check_outputs(jobs: Sequence[Job], out_dir: Path, options: BatchOptions) -> None:
    """Refuse outputs that would overwrite an input, or DICOM outputs of non-DICOM inputs."""
    unknown = [f for f in options.formats if f not in FORMATS]
    if unknown or not options.formats:
        raise OutputError(f"unknown output format {unknown or options.formats!r} "
                          f"({', '.join(FORMATS)})")
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError("output folder is a file", out_dir)
    inputs = {p.resolve() for job in jobs for p in job.case.images}
    ensure_outside_inputs(out_dir, inputs)  # DICOM folders are scanned recursively
    for job in jobs:
        if any(output_path(job, out_dir, f).resolve() in inputs for f in options.formats):
            raise OutputError(f"output would overwrite the input {job.case.images[0]}", out_dir)
    for fmt in set(options.formats) & set(DICOM_FORMATS):
        not_dicom = [job.name for job in jobs if not job.is_dicom]
        if not_dicom:
            raise OutputError(f"--format {fmt} needs DICOM inputs; not DICOM: "
                              f"{', '.join(not_dicom[:5])}")


def predict_batch(
    predictor: Predictor, jobs: Sequence[Job], out_dir: str | Path, options: BatchOptions
) -> list[CaseResult]:
    """Predict every job into ``out_dir``; returns one result per job, in job order."""
    out_dir = Path(out_dir)
    check_outputs(jobs, out_dir, options)
    results, todo = split_existing(jobs, out_dir, options)
    for result in _run(predictor, todo, out_dir, options):
        results[result.name] = result
    return [results[job.name] for job in jobs]


def split_existing(
    jobs: Sequence[Job], out_dir: Path, options: BatchOptions
) -> tuple[dict[str, CaseResult], list[Job]]:
    """Results for jobs whose output already exists (skipped unless ``options.overwrite``)
    and the jobs still to run."""
    skipped: dict[str, CaseResult] = {}
    todo: list[Job] = []
    for job in jobs:
        target = output_path(job, out_dir, options.formats[0])
        done = all(output_path(job, out_dir, f).exists() for f in options.formats) and (
            not options.uncertainty or sidecars.uncertainty_score_path(out_dir, job.name).exists())
        if done and not options.overwrite:
            skipped[job.name] = CaseResult(job.name, "skipped", target)
        else:
            todo.append(job)
    if skipped:
        log.info("skipping %d case(s) with existing outputs (use --overwrite)", len(skipped))
    return skipped, todo


def _run(
    predictor: Predictor, jobs: Sequence[Job], out_dir: Path, options: BatchOptions
) -> list[CaseResult]:
    if not options.overlap:  # one case in memory at a time (a tight RAM budget)
        return [predict_one(predictor, job, out_dir, options)
                for job in tqdm(jobs, desc="predict", unit="case", disable=not options.progress)]
    results = []
    with ThreadPoolExecutor(1, "medseg-read") as reader, \
            ThreadPoolExecutor(1, "medseg-write") as writer:
        loading = reader.submit(_load, predictor, jobs[0]) if jobs else None
        writing: Future[CaseResult] | None = None
        for i, job in enumerate(tqdm(jobs, desc="predict", unit="case",
                                     disable=not options.progress)):
            assert loading is not None
            current = loading
            loading = reader.submit(_load, predictor, jobs[i + 1]) if i + 1 < len(jobs) else None
            target = output_path(job, out_dir, options.formats[0])
            try:
                volume, pre, read_s = current.result()
                del current  # the future must not keep the preprocessed arrays alive
                start = time.perf_counter()
                predicted = _predict(predictor, job, volume, pre, options)
                del pre
                predict_s = time.perf_counter() - start
            except Exception as exc:  # one bad case must not stop the batch
                results.append(_failed(job, target, exc))
                continue
            if writing is not None:
                results.append(writing.result())
            writing = writer.submit(_write, predictor, job, predicted, out_dir, options,
                                    read_s + predict_s)
        if writing is not None:
            results.append(writing.result())
    return results


def predict_one(
    predictor: Predictor, job: Job, out_dir: Path, options: BatchOptions
) -> CaseResult:
    """Read, predict and write one job in the calling thread (the unit of work of
    distributed prediction); a failure comes back as a ``failed`` result."""
    target = output_path(job, out_dir, options.formats[0])
    try:
        volume, pre, read_s = _load(predictor, job)
        start = time.perf_counter()
        predicted = _predict(predictor, job, volume, pre, options)
    except Exception as exc:  # reported per case
        return _failed(job, target, exc)
    del pre
    return _write(predictor, job, predicted, out_dir, options,
                  read_s + time.perf_counter() - start)


def _predict(predictor: Predictor, job: Job, volume: Volume, pre: PreprocessedCase,
             options: BatchOptions) -> tuple[Prediction, CaseUncertainty | None]:
    if options.uncertainty:
        predicted = predict_with_uncertainty(predictor, volume, pre, options.save_probabilities)
    else:
        predicted = (predictor.predict(volume, pre, options.save_probabilities,
                                       options.resources.get(job.name)), None)
    release_free_memory()
    return predicted


def _load(predictor: Predictor, job: Job) -> tuple[Volume, PreprocessedCase, float]:
    """Read and preprocess a job; the returned volume keeps geometry and metadata only
    (its pixels are freed: prediction needs the preprocessed image alone)."""
    start = time.perf_counter()
    volume, _ = read_case(job.case)
    pre = predictor.preprocess(volume)
    shell = volume.with_array(np.broadcast_to(np.zeros((), volume.dtype), volume.array.shape))
    del volume
    release_free_memory()
    return shell, pre, time.perf_counter() - start


def _write(
    predictor: Predictor, job: Job, predicted: tuple[Prediction, CaseUncertainty | None],
    out_dir: Path, options: BatchOptions, elapsed: float,
) -> CaseResult:
    target = output_path(job, out_dir, options.formats[0])
    start = time.perf_counter()
    prediction, uncertainty = predicted
    labels = prediction.labels
    try:
        for fmt in options.formats:
            path = output_path(job, out_dir, fmt)
            if fmt in DICOM_FORMATS:
                write_annotation(labels, path, predictor.label_names, fmt)
            else:
                write_volume(labels, path)
        if options.save_probabilities and prediction.has_probabilities:
            write_probability_slabs(probabilities_path(job, out_dir), prediction,
                                    predictor.plan.label_values)
        if uncertainty is not None:
            write_uncertainty(out_dir, job.name, uncertainty, labels)
    except Exception as exc:  # reported per case
        return _failed(job, target, exc)
    release_free_memory()
    return CaseResult(job.name, "ok", target, labels.spatial_shape,
                      elapsed + time.perf_counter() - start, voxel_counts(labels.array[0]))


def voxel_counts(labels: np.ndarray, slab: int = 16) -> dict[int, int]:
    """Voxels per label value, a few slices at a time (``np.unique`` of a whole CT label
    map sorts a full copy of it)."""
    counts: dict[int, int] = {}
    for k in range(0, labels.shape[-1], slab):
        values, n = np.unique(labels[..., k : k + slab], return_counts=True)
        for v, c in zip(values.tolist(), n.tolist(), strict=True):
            counts[int(v)] = counts.get(int(v), 0) + int(c)
    return dict(sorted(counts.items()))


def write_probabilities(
    path: Path, probabilities: np.ndarray, affine: np.ndarray, label_values: Sequence[int]
) -> None:
    """Atomically save ``(K, I, J, K)`` float16 probabilities with affine and label values."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, probabilities=probabilities.astype(np.float16),
                            affine=affine, label_values=np.asarray(label_values))


def write_probability_slabs(path: Path, prediction: Prediction,
                            label_values: Sequence[int]) -> None:
    """Atomically save the source-grid float16 probabilities of ``prediction`` as
    ``write_probabilities`` does, streamed slab by slab into the archive (Fortran-ordered
    array: a slab of the last axis is one contiguous run), never whole in memory."""
    labels = prediction.labels
    shape = (len(label_values), *labels.spatial_shape)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f2")), "fortran_order": True,
              "shape": shape}
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED,
                                                   allowZip64=True) as archive:
        with archive.open("probabilities.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_2_0(fh, header)
            for _, slab in prediction.probability_slabs():
                fh.write(np.ascontiguousarray(slab.transpose(3, 2, 1, 0)).tobytes())
        for name, value in (("affine", labels.affine), ("label_values", np.asarray(label_values))):
            with archive.open(f"{name}.npy", "w") as fh:
                np.lib.format.write_array(fh, np.asarray(value))


def _failed(job: Job, target: Path, exc: Exception) -> CaseResult:
    reason = str(exc) if isinstance(exc, MedsegError) else f"{type(exc).__name__}: {exc}"
    log.debug("case %s failed", job.name, exc_info=exc)
    return CaseResult(job.name, "failed", target, error=reason)


# --- reporting -------------------------------------------------------------------------------


def summary_table(results: Sequence[CaseResult], label_names: Mapping[int, str]) -> str:
    """Plain-text table: case, status, shape, seconds and voxels per foreground label."""
    foreground = [v for v in sorted(label_names) if v != 0]
    header = ["case", "status", "shape", "time (s)", *(label_names[v] for v in foreground)]
    rows = [header]
    for r in results:
        shape = "x".join(str(s) for s in r.shape) if r.shape else "-"
        seconds = f"{r.seconds:.2f}" if r.status == "ok" else "-"
        counts = [str(r.voxels.get(v, 0)) if r.status == "ok" else "-" for v in foreground]
        rows.append([r.name, r.status, shape, seconds, *counts])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def totals_line(results: Sequence[CaseResult], wall_seconds: float) -> str:
    """One line: counts per status and throughput."""
    done = sum(r.status == "ok" for r in results)
    failed = [r.name for r in results if r.status == "failed"]
    skipped = sum(r.status == "skipped" for r in results)
    rate = done / wall_seconds if wall_seconds > 0 else float("nan")
    line = (f"{done} predicted, {skipped} skipped, {len(failed)} failed in "
            f"{wall_seconds:.1f} s ({rate:.2f} cases/s)")
    return line + (f"; failed: {', '.join(failed)}" if failed else "")


"""``preprocess_dataset``: fill the cache in parallel worker processes, reusing every case
whose inputs and plan are unchanged."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from medseg.core.atomic import write_json
from medseg.core.errors import ConfigError, InputError
from medseg.data import (
    Case,
    Dataset,
    ValidationReport,
    read_case,
    read_listing,
    validate_dataset,
    write_listing,
)
from medseg.preprocess.cache import (
    adopt_case,
    cache_key,
    case_files,
    input_identity,
    is_cached,
    write_case,
    write_index,
)
from medseg.preprocess.case import preprocess_case
from medseg.preprocess.fingerprint import compute_fingerprint
from medseg.preprocess.plan import Plan
from medseg.preprocess.planning import DEFAULT_MEMORY_GB, plan_dataset


@dataclass(frozen=True)
class CaseResult:
    """Outcome of one case: its preprocessed shape, reused or computed, or the error."""

    case_id: str
    shape: tuple[int, ...] | None
    labelled: bool
    reused: bool
    nbytes: int
    seconds: float
    error: str | None = None


@dataclass(frozen=True)
class PreprocessSummary:
    """What ``preprocess_dataset`` did."""

    folder: Path
    results: tuple[CaseResult, ...]
    seconds: float

    @property
    def failed(self) -> tuple[CaseResult, ...]:
        return tuple(r for r in self.results if r.error)

    @property
    def computed(self) -> int:
        return sum(not r.reused and not r.error for r in self.results)

    @property
    def reused(self) -> int:
        return sum(r.reused for r in self.results)

    def text(self) -> str:
        """One screen: counts, time, size, shapes, failures."""
        ok = [r for r in self.results if not r.error]
        shapes = np.array([r.shape for r in ok]) if ok else np.zeros((0, 3))
        size = sum(r.nbytes for r in ok)
        lines = [
            f"preprocessed {len(ok)} case(s) into {self.folder}",
            f"  computed {self.computed}, reused {self.reused}, failed {len(self.failed)} "
            f"in {self.seconds:.1f} s; cache {size / 2**20:.1f} MiB",
        ]
        if len(shapes):
            lines.append(f"  shapes: median {np.median(shapes, 0).astype(int).tolist()}, "
                         f"min {shapes.min(0).tolist()}, max {shapes.max(0).tolist()}")
        lines += [f"  FAILED {r.case_id}: {r.error}" for r in self.failed]
        return "\n".join(lines)


def preprocess_dataset(
    dataset: Dataset, plan: Plan, run_dir: str | Path, workers: int | None = None,
    progress: bool = True, include_test: bool = False,
) -> PreprocessSummary:
    """Preprocess every training case (and test cases if ``include_test``) into the cache
    ``run_dir/preprocessed/<key>/``; ``index.json`` is written when all are done."""
    start = time.perf_counter()
    cases = dataset.cases + (dataset.test_cases if include_test else ())
    identities = {c.case_id: input_identity(c) for c in cases}
    key = cache_key(plan, list(identities.items()))
    folder = Path(run_dir) / "preprocessed" / key
    folder.mkdir(parents=True, exist_ok=True)
    donors = sorted((p for p in folder.parent.iterdir() if p.is_dir() and p != folder),
                    key=lambda p: p.stat().st_mtime_ns, reverse=True)
    jobs = [(c, plan, folder, identities[c.case_id], donors) for c in cases]
    results = list(tqdm(_run(jobs, workers), total=len(jobs), desc="preprocess",
                        unit="case", disable=not progress))
    results.sort(key=lambda r: r.case_id)
    entries = {r.case_id: {"shape": list(r.shape or ()), "labelled": r.labelled}
               for r in results if not r.error}
    write_index(folder, plan, key, entries)
    return PreprocessSummary(folder, tuple(results), time.perf_counter() - start)


def plan_run(
    dataset: Dataset, run_dir: str | Path, strict: bool = False,
    memory_budget_gb: float = DEFAULT_MEMORY_GB, workers: int = 4, progress: bool = True,
    partial_labels: str = "auto",
) -> tuple[Plan, ValidationReport]:
    """Validate, fingerprint and plan ``dataset``; write ``dataset.json`` (listing +
    validation), ``fingerprint.json`` and ``plan.json`` into ``run_dir``."""
    run_dir = Path(run_dir)
    report = validate_dataset(dataset, strict=strict, workers=workers, progress=progress)
    valid = dataset.with_cases(report.valid)
    fingerprint = compute_fingerprint(valid, workers=workers, progress=progress)
    plan = plan_dataset(valid, fingerprint, memory_budget_gb=memory_budget_gb,
                        partial_labels=partial_labels)
    write_listing(run_dir / "dataset.json", dataset, report)
    write_json(run_dir / "fingerprint.json", fingerprint.to_dict())
    plan.save(run_dir / "plan.json")
    return plan, report


def preprocess_run(run_dir: str | Path, workers: int | None = None,
                   progress: bool = True) -> PreprocessSummary:
    """Preprocess the valid cases listed in ``run_dir/dataset.json`` with ``plan.json``."""
    run_dir = Path(run_dir)
    for name in ("dataset.json", "plan.json"):
        if not (run_dir / name).is_file():
            raise ConfigError(f"no {name} here (run `medseg plan DATASET --out RUN_DIR` "
                              "first)", run_dir)
    dataset = read_listing(run_dir / "dataset.json")
    plan = Plan.load(run_dir / "plan.json")
    return preprocess_dataset(dataset, plan, run_dir, workers=workers, progress=progress)


def process_case(case: Case, plan: Plan, folder: Path, identity: list[list[Any]],
                 donors: Sequence[Path] = ()) -> CaseResult:
    """Preprocess and write one case, or reuse it (from ``folder`` or a ``donors`` cache
    folder made with the same inputs and plan); input errors are returned, not raised."""
    start = time.perf_counter()
    plan_hash = plan.preprocessing_hash()
    if (is_cached(folder, case.case_id, identity, plan_hash)
            or adopt_case(folder, donors, case.case_id, identity, plan_hash)):
        shape = tuple(int(v) for v in np.load(folder / f"{case.case_id}.npy",
                                              mmap_mode="r").shape[1:])
        nbytes = sum(p.stat().st_size for p in case_files(folder, case.case_id))
        labelled = (folder / f"{case.case_id}_seg.npy").is_file()
        return CaseResult(case.case_id, shape, labelled, True, nbytes, 0.0)
    try:
        image, label = read_case(case)
        pre = preprocess_case(image, label, plan)
        nbytes = write_case(folder, case.case_id, pre, identity, plan_hash)
    except InputError as exc:
        return CaseResult(case.case_id, None, False, False, 0, time.perf_counter() - start,
                          error=str(exc))
    return CaseResult(case.case_id, tuple(pre.image.shape[1:]), pre.label is not None, False,
                      nbytes, time.perf_counter() - start)


def _run(jobs: list[tuple[Any, ...]], workers: int | None) -> Iterator[CaseResult]:
    n = workers if workers is not None else (os.cpu_count() or 1)
    if n <= 1 or len(jobs) <= 1:
        yield from (process_case(*job) for job in jobs)
        return
    with ProcessPoolExecutor(max_workers=min(n, len(jobs))) as pool:
        futures: list[Future[CaseResult]] = [pool.submit(process_case, *job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()

"""Batch prediction on a Dask cluster: one task per case, one loaded model per worker.

``medseg predict ... --workers N`` starts a local cluster of N worker processes;
``--scheduler tcp://HOST:PORT`` uses a running one (``dask scheduler`` + ``dask worker``,
dask-jobqueue on SLURM/PBS, dask-cuda, ...). Workers must see the model, the inputs and
the output folder at the same paths as the client (a shared file system); paths are
made absolute before they are sent.

Each worker process loads the model the first time it gets a case and keeps it
(:func:`worker_predictor`, keyed by :class:`ModelSpec`). A task reads, predicts and
writes its case atomically into the output folder and returns a small
:class:`~medseg.inference.batch.CaseResult`; a case that fails (bad input, or a worker
lost mid-case) is retried once on any worker, then reported as ``failed`` while the
others go on. On a GPU machine, ``--workers N --device cuda`` (or ``auto``) gives each
local worker its own GPU (``CUDA_VISIBLE_DEVICES``, round-robin over the visible ones:
:func:`gpu_slots`), as dask-cuda does; an explicit ``cuda:K`` keeps every worker on GPU K.
Dask is an optional dependency (``pip install 'medseg[distributed]'``)
imported only here, when used.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import itertools
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from tqdm import tqdm

from medseg.core.errors import ConfigError, InputError, MedsegError
from medseg.inference.batch import (
    BatchOptions,
    CaseResult,
    check_outputs,
    output_path,
    predict_one,
    split_existing,
)
from medseg.inference.jobs import Job
from medseg.inference.predictor import InferenceSettings, Predictor

log = logging.getLogger(__name__)

#: Attempts beyond the first for a failing case (then it is reported).
RETRIES = 1
_LOAD_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelSpec:
    """What a worker needs to load the predictor (picklable and hashable: the cache key)."""

    model: Path
    folds: tuple[str, ...] | None = None
    config: str | None = None
    device: str = "cpu"
    settings: InferenceSettings = field(default_factory=InferenceSettings)

    def load(self) -> Predictor:
        return Predictor.load(self.model, self.folds, self.config, self.device, self.settings)


class CaseFailed(MedsegError):
    """A case failed on a worker (raised there so that Dask retries it)."""


# --- worker side -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _cached_predictor(spec: ModelSpec) -> Predictor:
    return spec.load()


def worker_predictor(spec: ModelSpec) -> Predictor:
    """This process's predictor for ``spec``, loaded on first use and kept."""
    with _LOAD_LOCK:  # worker threads share one copy
        return _cached_predictor(spec)


def models_loaded() -> int:
    """How many times this process loaded a model (1 per worker when reuse works)."""
    return _cached_predictor.cache_info().misses


def predict_task(spec: ModelSpec, job: Job, out_dir: Path, options: BatchOptions
                 ) -> CaseResult:
    """Worker task: predict and write one case; raises :class:`CaseFailed` on failure."""
    result = predict_one(worker_predictor(spec), job, out_dir, options)
    if result.status == "failed":
        raise CaseFailed(result.error or "failed")
    return result


# --- client side -----------------------------------------------------------------------------


def import_distributed() -> ModuleType:
    """``dask.distributed``, or an InputError saying how to install it."""
    try:
        import dask.distributed
    except ImportError:
        raise InputError("--workers/--scheduler need Dask: pip install 'medseg[distributed]'"
                         ) from None
    return dask.distributed


@contextlib.contextmanager
def quiet_dask_logs(level: int = logging.ERROR) -> Iterator[None]:
    """Only Dask's errors in this process (its info lines would bury the progress bar;
    failed cases are reported by medseg itself)."""
    logger = logging.getLogger("distributed")
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        entries = [e.strip() for e in listed.split(",")]
        # CUDA stops at the first entry that is empty or a negative index
        return list(itertools.takewhile(lambda e: e and not e.startswith("-"), entries))
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_slots(device: str, workers: int) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` of each local worker for ``device``: the visible GPUs
    round-robin for ``cuda``/``auto``; none (empty list) for the CPU, for ``cuda:K`` (every
    worker on that GPU) and where no GPU is visible."""
    if str(device) not in ("cuda", "auto"):
        return []
    visible = visible_gpus()
    if not visible:
        return []
    if workers > len(visible):
        log.warning("%d workers share %d GPU(s)", workers, len(visible))
    return [visible[i % len(visible)] for i in range(workers)]


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None,
                gpus: Sequence[str] = ()) -> Iterator[Any]:
    """A client of the scheduler at ``scheduler``, or of a local cluster of ``workers``
    single-threaded processes (closed on exit; its logs are silenced, since every failed
    case is reported by the client). ``gpus`` (from :func:`gpu_slots`) sets each local
    worker's ``CUDA_VISIBLE_DEVICES``."""
    dd = import_distributed()
    if (scheduler is None) == (workers is None):
        raise ConfigError("give either a scheduler address or a number of workers")
    if scheduler is not None:
        try:
            client = dd.Client(scheduler, timeout="30s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(f"cannot connect to the Dask scheduler {scheduler}: {exc}"
                             ) from None
        with quiet_dask_logs(), client:
            yield client
        return
    if workers is None or workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if gpus and len(gpus) != workers:
        raise ConfigError(f"{workers} workers but {len(gpus)} GPU slots")
    import dask

    with quiet_dask_logs(), environment_kept(), \
            dask.config.set(local_worker_environment(workers)), \
            dd.LocalCluster(n_workers=0, threads_per_worker=1, processes=True,
                            dashboard_address=":0", silence_logs=logging.CRITICAL
                            ) as cluster, \
            dd.Client(cluster) as client:  # ":0": a free port, no clash with other clusters
        start_workers(cluster, [{"CUDA_VISIBLE_DEVICES": g} for g in gpus] or [{}] * workers)
        client.wait_for_workers(workers)
        if importlib.util.find_spec("bokeh"):
            log.info("Dask dashboard: %s", client.dashboard_link)
        yield client


@contextlib.contextmanager
def environment_kept() -> Iterator[None]:
    """Restore this process's environment variables on exit: Dask's nanny writes its
    workers' pre-spawn settings (``OMP_NUM_THREADS=1``, ...) into the parent's
    ``os.environ``, where they would reach every process the host program starts later."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def start_workers(cluster: Any, environments: Sequence[dict[str, str]]) -> None:
    """Start one worker of the local ``cluster`` per entry, with those environment
    variables (Nanny ``env``: they take precedence over the client's)."""
    template = cluster.new_spec
    for name, env in enumerate(environments):
        options = {**template["options"], "env": {**(template["options"].get("env") or {}), **env}}
        cluster.worker_spec[name] = {**template, "options": options}
    cluster.scale(len(environments))


def local_worker_environment(workers: int) -> dict[str, Any]:
    """Dask settings for local worker processes: the node's cores shared among the
    workers (``$OMP_NUM_THREADS`` each when set), and glibc's own malloc tuning.

    Dask sets ``MALLOC_TRIM_THRESHOLD_`` for its workers, which turns off glibc's adaptive
    mmap threshold: every large array is then mmap'ed and unmapped, and prediction ran
    1.5-2x slower. Large allocate/free cycles are exactly what prediction does.
    """
    threads = os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // workers)
    environ = "distributed.nanny.pre-spawn-environ"
    return {f"{environ}.MALLOC_TRIM_THRESHOLD_": None,
            **{f"{environ}.{name}": threads for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}}


def absolute(job: Job) -> Job:
    """``job`` with absolute input paths (workers may run elsewhere)."""
    case = replace(job.case, images=tuple(Path(p).resolve() for p in job.case.images))
    return replace(job, case=case)


def predict_batch_distributed(
    spec: ModelSpec, jobs: Sequence[Job], out_dir: str | Path, options: BatchOptions,
    client: Any,
) -> list[CaseResult]:
    """Predict every job on ``client``'s cluster; one result per job, in job order.

    Like :func:`medseg.inference.batch.predict_batch`: existing outputs are skipped
    unless ``options.overwrite``, and failed cases are reported, not raised.
    """
    out_dir = Path(out_dir).resolve()
    check_outputs(jobs, out_dir, options)
    spec = replace(spec, model=Path(spec.model).resolve())
    results, todo = split_existing(jobs, out_dir, options)
    for result in _gather(spec, todo, out_dir, options, client):
        results[result.name] = result
    return [results[job.name] for job in jobs]


def predict_on_cluster(
    spec: ModelSpec, jobs: Sequence[Job], out_dir: str | Path, options: BatchOptions,
    scheduler: str | None = None, workers: int | None = None,
) -> list[CaseResult]:
    """:func:`predict_batch_distributed` on a scheduler, or on a local cluster of
    ``workers`` processes started (and stopped) for this batch."""
    gpus = gpu_slots(spec.device, workers) if workers else []
    with dask_client(scheduler, workers, gpus) as client:
        return predict_batch_distributed(spec, jobs, out_dir, options, client)


def _gather(spec: ModelSpec, jobs: Sequence[Job], out_dir: Path, options: BatchOptions,
            client: Any) -> Iterator[CaseResult]:
    dd = import_distributed()
    token = f"{time.time_ns():x}"
    futures = {
        client.submit(predict_task, spec, absolute(job), out_dir, options, retries=RETRIES,
                      pure=False, key=f"medseg-predict-{job.name}-{token}"): job
        for job in jobs
    }
    try:
        for future in tqdm(dd.as_completed(futures), total=len(futures), desc="predict",
                           unit="case", disable=not options.progress):
            yield _outcome(future, futures[future], out_dir, options)
    finally:
        client.cancel(list(futures))


def _outcome(future: Any, job: Job, out_dir: Path, options: BatchOptions) -> CaseResult:
    """A finished task's result, or a ``failed`` result naming why."""
    if future.status == "finished":
        return future.result()
    try:
        exc = future.exception()
    except Exception as err:  # cancelled or lost
        exc = err
    reason = str(exc) if isinstance(exc, MedsegError) else f"{type(exc).__name__}: {exc}"
    return CaseResult(job.name, "failed", output_path(job, out_dir, options.formats[0]),
                      error=reason)

"""Run a sequence of stages in a run folder: skip what is up to date, resume what was cut.

Each :class:`Stage` is a small function of a :class:`StageContext` that returns the run
folder paths it produced. The runner keys each stage by its config section, the digests
of its upstream stages' outputs and its external inputs (see :mod:`.state`), records
``running`` before and ``done`` after in ``stages.json``, and so:

- skips a stage whose key is unchanged and whose outputs are present (and says so);
- resumes a stage left ``running``/``failed`` with an unchanged key (``ctx.resume``);
- re-runs downstream stages when an upstream stage's outputs changed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from medseg.core.atomic import write_text
from medseg.core.errors import ConfigError, OutputError
from medseg.pipeline.config import PipelineConfig, section_hash_input, to_yaml
from medseg.pipeline.state import (
    KeyParts,
    StageRecord,
    content_digest,
    hash_json,
    load_records,
    rerun_reason,
    save_records,
    stat_digest,
)

RESOLVED_CONFIG = "config.resolved.yaml"
LOCK_FILE = ".medseg.lock"


@dataclass(frozen=True)
class StageContext:
    """What a stage function gets: the config, the run folder, and whether to resume."""

    config: PipelineConfig
    run_dir: Path
    resume: bool = False


@dataclass(frozen=True)
class StageResult:
    """Run-folder-relative paths a stage produced (digested for downstream keys)."""

    outputs: tuple[str, ...]
    summary: str = ""


def no_inputs(config: PipelineConfig) -> tuple[Path, ...]:
    """Default: a stage reads nothing outside the run folder."""
    return ()


@dataclass(frozen=True)
class Stage:
    """A named step: ``run(ctx) -> StageResult``.

    ``section``: config section hashed into the key; ``needs``: upstream stages whose
    outputs it reads; ``inputs(config)``: external files/folders it reads; ``fresh``:
    run-folder paths removed before a non-resumed run (stale checkpoints, predictions).
    """

    name: str
    run: Callable[[StageContext], StageResult]
    section: str | None = None
    needs: tuple[str, ...] = ()
    inputs: Callable[[PipelineConfig], Sequence[Path]] = no_inputs
    fresh: tuple[str, ...] = ()


@dataclass(frozen=True)
class StageOutcome:
    """What happened to one stage in one run."""

    name: str
    action: str  # "skipped" | "ran" | "resumed"
    seconds: float = 0.0
    summary: str = ""


@dataclass
class _Progress:
    records: dict[str, StageRecord]
    digests: dict[str, str] = field(default_factory=dict)
    outcomes: list[StageOutcome] = field(default_factory=list)


def stage_names(stages: Sequence[Stage]) -> list[str]:
    return [s.name for s in stages]


def _check_stage(name: str | None, stages: Sequence[Stage], option: str) -> None:
    if name is not None and name not in stage_names(stages):
        raise ConfigError(f"{option}: unknown stage {name!r}; stages are "
                          f"{', '.join(stage_names(stages))}")


def _parts(stage: Stage, config: PipelineConfig, digests: Mapping[str, str],
           run_dir: Path) -> KeyParts:
    missing = [n for n in stage.needs if n not in digests]
    if missing:
        raise ConfigError(f"stage {stage.name!r} needs {missing}, which did not run", run_dir)
    section = section_hash_input(config, stage.section) if stage.section else None
    return KeyParts(
        config=hash_json([stage.name, section]),
        upstream={n: digests[n] for n in stage.needs},
        inputs=stat_digest(stage.inputs(config)),
    )


def _outputs_digest(run_dir: Path, outputs: Sequence[str]) -> str | None:
    try:
        return content_digest([run_dir / o for o in outputs], run_dir)
    except FileNotFoundError:
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Refuse a second concurrent run in the same folder (a stale lock is taken over)."""
    lock = run_dir / LOCK_FILE
    if lock.exists():
        pid = int(lock.read_text().strip() or 0)
        if pid and pid != os.getpid() and _alive(pid):
            raise OutputError(f"another medseg run (pid {pid}) is using this run folder",
                              run_dir)
    write_text(lock, str(os.getpid()))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(paths: Sequence[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _execute(stage: Stage, ctx: StageContext, parts: KeyParts, state: _Progress,
             log: Callable[[str], None]) -> None:
    previous = state.records.get(stage.name)
    action = "resumed" if ctx.resume else "ran"
    if ctx.resume:
        log(f"[{stage.name}] resuming the interrupted stage")
    else:
        log(f"[{stage.name}] running ({rerun_reason(previous, parts)})")
        _remove([ctx.run_dir / p for p in stage.fresh])
    record = StageRecord(status="running", parts=parts, started=_now())
    state.records[stage.name] = record
    save_records(ctx.run_dir, state.records)
    start = time.monotonic()
    try:
        result = stage.run(ctx)
        digest = _outputs_digest(ctx.run_dir, result.outputs)
        if digest is None:
            raise OutputError(f"stage {stage.name!r} did not write its outputs "
                              f"{list(result.outputs)}", ctx.run_dir)
    except BaseException as exc:
        state.records[stage.name] = replace(
            record, status="failed" if isinstance(exc, Exception) else "running",
            seconds=time.monotonic() - start, error=f"{type(exc).__name__}: {exc}")
        save_records(ctx.run_dir, state.records)
        raise
    seconds = time.monotonic() - start
    state.records[stage.name] = replace(
        record, status="done", outputs=tuple(result.outputs), digest=digest,
        seconds=round(seconds, 3), summary=result.summary)
    save_records(ctx.run_dir, state.records)
    state.digests[stage.name] = digest
    state.outcomes.append(StageOutcome(stage.name, action, seconds, result.summary))
    log(f"[{stage.name}] done in {seconds:.1f} s" + (f": {result.summary}" if result.summary
                                                       else ""))


def _up_to_date_digest(parts: KeyParts, run_dir: Path, record: StageRecord | None
                       ) -> str | None:
    """The outputs digest when ``record`` is done with the same key and outputs intact."""
    if record is None or record.status != "done" or record.parts.key != parts.key:
        return None
    return _outputs_digest(run_dir, record.outputs)


def run_stages(
    stages: Sequence[Stage],
    config: PipelineConfig,
    run_dir: Path,
    *,
    start: str | None = None,
    only: str | None = None,
    log: Callable[[str], None] = print,
) -> list[StageOutcome]:
    """Run ``stages`` in order in ``run_dir`` (created); returns what happened to each.

    ``start``: force re-running this stage and every later one (earlier ones still run
    when out of date); ``only``: run just this stage (its upstream stages must be done).
    A stage left interrupted with an unchanged key is resumed even when forced.
    """
    _check_stage(start, stages, "--from")
    _check_stage(only, stages, "--only")
    if start and only:
        raise ConfigError("--from and --only cannot be combined")
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        write_text(run_dir / RESOLVED_CONFIG, to_yaml(config))
        state = _Progress(records=load_records(run_dir))
        names = stage_names(stages)
        first_forced = names.index(start) if start else len(names)
        for index, stage in enumerate(stages):
            if only and index > names.index(only):
                break
            parts = _parts(stage, config, state.digests, run_dir)
            record = state.records.get(stage.name)
            current = _up_to_date_digest(parts, run_dir, record)
            forced = index >= first_forced or stage.name == only
            if current is not None and not forced:
                log(f"[{stage.name}] up to date, skipped")
                state.digests[stage.name] = current
                state.outcomes.append(StageOutcome(stage.name, "skipped"))
                continue
            if only and stage.name != only:
                raise ConfigError(f"--only {only}: upstream stage {stage.name!r} is not up to "
                                  "date; run the pipeline without --only first", run_dir)
            resume = (record is not None and record.status in ("running", "failed")
                      and record.parts.key == parts.key)
            _execute(stage, StageContext(config, run_dir, resume), parts, state, log)
    return state.outcomes

"""``run_pipeline``: load a pipeline file and run its stages in a run folder."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from medseg.core.paths import ensure_outside_inputs
from medseg.pipeline.config import PipelineConfig, RunConfig, load_config
from medseg.pipeline.runner import Stage, StageOutcome, run_stages
from medseg.pipeline.stages import EVALUATION_DIR, standard_stages

SUMMARY_FILE = "summary.json"
REPORT_FILE = "index.html"


@dataclass(frozen=True)
class PipelineRun:
    """What a pipeline run did and where its results are."""

    config: PipelineConfig
    run_dir: Path
    outcomes: tuple[StageOutcome, ...]

    @property
    def report(self) -> Path:
        return self.run_dir / EVALUATION_DIR / REPORT_FILE

    @property
    def summary_file(self) -> Path:
        return self.run_dir / EVALUATION_DIR / SUMMARY_FILE


def resolve_workdir(config: PipelineConfig, workdir: str | Path | None) -> Path:
    """The run folder: ``workdir`` if given, else ``run.workdir``, else ``runs/<name>``."""
    if workdir is not None:
        return Path(workdir).resolve()
    if config.run.workdir is not None:
        return config.run.workdir
    return (Path.cwd() / "runs" / config.name).resolve()


def run_pipeline(
    pipeline_file: str | Path,
    *,
    workdir: str | Path | None = None,
    overrides: Sequence[str] = (),
    start: str | None = None,
    only: str | None = None,
    stage_list: Sequence[Stage] | None = None,
    log: Callable[[str], None] = print,
) -> PipelineRun:
    """Load, validate and run a pipeline file (see :func:`~.runner.run_stages`)."""
    config = load_config(pipeline_file, overrides)
    run_dir = resolve_workdir(config, workdir)
    ensure_outside_inputs(run_dir, [config.dataset.path, *config.predict.inputs])
    config = replace(config, run=RunConfig(workdir=run_dir))
    log(f"pipeline {config.name}: run folder {run_dir}")
    chosen = stage_list if stage_list is not None else standard_stages()
    outcomes = run_stages(chosen, config, run_dir, start=start, only=only, log=log)
    return PipelineRun(config, run_dir, tuple(outcomes))


def read_summary(path: Path) -> dict[str, Any] | None:
    """The evaluation summary.json, or None when there is none."""
    return json.loads(path.read_text()) if path.is_file() else None


def format_dice(summary: dict[str, Any]) -> str:
    """Dice per class (mean ± std, median) as a small text table."""
    lines = [f"Dice on {summary['n_cases']} held-out case(s):"]
    width = max((len(n) for n in summary["per_class"]), default=5)
    for name, stats in summary["per_class"].items():
        dice = stats["dice"]
        lines.append(f"  {name:<{width}}  {_num(dice.get('mean'))} ± {_num(dice.get('std'))}"
                     f"  (median {_num(dice.get('median'))})")
    overall = summary.get("overall", {}).get("dice")
    if overall:
        lines.append(f"  {'mean':<{width}}  {_num(overall.get('mean'))}")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "  n/a" if value is None or math.isnan(value) else f"{value:.4f}"

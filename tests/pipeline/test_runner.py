"""Skipping, invalidation and resuming, on a tiny fake pipeline that runs in milliseconds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from medseg.core.errors import ConfigError, OutputError
from medseg.pipeline.config import load_config
from medseg.pipeline.runner import LOCK_FILE, Stage, StageContext, StageResult, run_stages
from medseg.pipeline.state import load_records


class Interrupt(KeyboardInterrupt):
    """Raised by the fake training stage to simulate Ctrl-C / kill."""


def _ingest(ctx: StageContext) -> StageResult:
    text = (ctx.config.dataset.path / "cases.txt").read_text()
    (ctx.run_dir / "dataset.txt").write_text(text.upper())
    return StageResult(("dataset.txt",), f"{len(text.split())} cases")


def _plan(ctx: StageContext) -> StageResult:
    budget = int(ctx.config.plan.memory_budget_gb or 8)  # 8.0 and 8.4 give the same plan
    (ctx.run_dir / "plan.json").write_text(json.dumps({"batch": budget}))
    return StageResult(("plan.json",))


def make_train(calls: list[tuple[int, bool]], interrupt_at: int | None = None):
    """A training stage writing one checkpoint file per epoch; resumes from the last one."""

    def train(ctx: StageContext) -> StageResult:
        folder = ctx.run_dir / "train"
        folder.mkdir(exist_ok=True)
        done = len(list(folder.glob("epoch_*"))) if ctx.resume else 0
        calls.append((done, ctx.resume))
        for epoch in range(done, ctx.config.train.epochs or 3):
            if epoch == interrupt_at:
                raise Interrupt
            (folder / f"epoch_{epoch}").write_text((ctx.run_dir / "plan.json").read_text())
        (folder / "final").write_text(str(len(list(folder.glob("epoch_*")))))
        return StageResult(("train/final",), "trained")

    return train


def pipeline(calls: list, interrupt_at: int | None = None) -> list[Stage]:
    return [
        Stage("ingest", _ingest, section="dataset", inputs=lambda c: [c.dataset.path]),
        Stage("plan", _plan, section="plan", needs=("ingest",)),
        Stage("train", make_train(calls, interrupt_at), section="train", needs=("plan",),
              fresh=("train",)),
    ]


@pytest.fixture
def setup(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "cases.txt").write_text("a b c")
    cfg_file = tmp_path / "p.yaml"
    cfg_file.write_text("name: fake\ndataset: {path: data}\ntrain: {epochs: 4}\n")
    return cfg_file, data, tmp_path / "run"


def actions(outcomes) -> dict[str, str]:
    return {o.name: o.action for o in outcomes}


def test_second_run_skips_everything(setup, capsys):
    cfg_file, _, run = setup
    calls: list = []
    first = run_stages(pipeline(calls), load_config(cfg_file), run)
    assert actions(first) == {"ingest": "ran", "plan": "ran", "train": "ran"}
    second = run_stages(pipeline(calls), load_config(cfg_file), run)
    assert actions(second) == {"ingest": "skipped", "plan": "skipped", "train": "skipped"}
    assert "[train] up to date, skipped" in capsys.readouterr().out
    records = load_records(run)
    assert {r.status for r in records.values()} == {"done"}
    assert "medseg_version: " in (run / "config.resolved.yaml").read_text()


def test_config_change_reruns_that_stage_only(setup):
    cfg_file, _, run = setup
    calls: list = []
    run_stages(pipeline(calls), load_config(cfg_file), run)
    again = run_stages(pipeline(calls), load_config(cfg_file, ["train.epochs=2"]), run)
    assert actions(again) == {"ingest": "skipped", "plan": "skipped", "train": "ran"}
    assert sorted(p.name for p in (run / "train").iterdir()) == ["epoch_0", "epoch_1", "final"]


def test_changed_input_invalidates_downstream(setup):
    cfg_file, data, run = setup
    calls: list = []
    run_stages(pipeline(calls), load_config(cfg_file), run)
    (data / "cases.txt").write_text("a b c d")
    again = run_stages(pipeline(calls), load_config(cfg_file), run)
    # ingest re-runs; plan re-runs because its upstream changed; plan's output is the same,
    # so train (which reads only the plan) stays up to date.
    assert actions(again) == {"ingest": "ran", "plan": "ran", "train": "skipped"}


def test_upstream_output_change_reruns_downstream(setup):
    cfg_file, _, run = setup
    calls: list = []
    run_stages(pipeline(calls), load_config(cfg_file), run)
    unchanged = run_stages(pipeline(calls), load_config(cfg_file, ["plan.memory_budget_gb=8.4"]),
                           run)
    assert actions(unchanged) == {"ingest": "skipped", "plan": "ran", "train": "skipped"}
    changed = run_stages(pipeline(calls), load_config(cfg_file, ["plan.memory_budget_gb=16"]), run)
    assert actions(changed) == {"ingest": "skipped", "plan": "ran", "train": "ran"}


def test_hand_edited_output_invalidates_downstream(setup):
    cfg_file, _, run = setup
    calls: list = []
    run_stages(pipeline(calls), load_config(cfg_file), run)
    (run / "plan.json").write_text(json.dumps({"batch": 2}))
    again = run_stages(pipeline(calls), load_config(cfg_file), run)
    assert actions(again) == {"ingest": "skipped", "plan": "skipped", "train": "ran"}


def test_missing_output_reruns_stage(setup):
    cfg_file, _, run = setup
    calls: list = []
    run_stages(pipeline(calls), load_config(cfg_file), run)
    (run / "train" / "final").unlink()
    again = run_stages(pipeline(calls), load_config(cfg_file), run)
    assert actions(again)["train"] == "ran"


def test_interrupted_stage_resumes(setup):
    cfg_file, _, run = setup
    calls: list = []
    with pytest.raises(Interrupt):
        run_stages(pipeline(calls, interrupt_at=2), load_config(cfg_file), run)
    assert load_records(run)["train"].status == "running"
    assert not (run / LOCK_FILE).exists()
    resumed = run_stages(pipeline(calls), load_config(cfg_file), run)
    assert actions(resumed) == {"ingest": "skipped", "plan": "skipped", "train": "resumed"}
    assert calls == [(0, False), (2, True)]
    assert (run / "train" / "final").read_text() == "4"


def test_interrupted_stage_with_changed_config_starts_fresh(setup):
    cfg_file, _, run = setup
    calls: list = []
    with pytest.raises(Interrupt):
        run_stages(pipeline(calls, interrupt_at=2), load_config(cfg_file), run)
    run_stages(pipeline(calls), load_config(cfg_file, ["train.epochs=3"]), run)
    assert calls[-1] == (0, False)
    assert (run / "train" / "final").read_text() == "3"


def test_from_forces_later_stages(setup):
    cfg_file, _, run = setup
    calls: list = []
    run_stages(pipeline(calls), load_config(cfg_file), run)
    again = run_stages(pipeline(calls), load_config(cfg_file), run, start="plan")
    assert actions(again) == {"ingest": "skipped", "plan": "ran", "train": "ran"}


def test_only_runs_one_stage(setup):
    cfg_file, _, run = setup
    calls: list = []
    with pytest.raises(ConfigError, match="upstream stage 'ingest' is not up to date"):
        run_stages(pipeline(calls), load_config(cfg_file), run, only="plan")
    run_stages(pipeline(calls), load_config(cfg_file), run)
    again = run_stages(pipeline(calls), load_config(cfg_file), run, only="plan")
    assert actions(again) == {"ingest": "skipped", "plan": "ran"}


def test_unknown_stage_names_are_rejected(setup):
    cfg_file, _, run = setup
    with pytest.raises(ConfigError, match="unknown stage 'trian'"):
        run_stages(pipeline([]), load_config(cfg_file), run, start="trian")


def test_concurrent_run_is_refused(setup):
    cfg_file, _, run = setup
    run.mkdir()
    (run / LOCK_FILE).write_text(str(os.getppid()))
    with pytest.raises(OutputError, match="another medseg run"):
        run_stages(pipeline([]), load_config(cfg_file), run)


def test_stale_lock_is_taken_over(setup):
    cfg_file, _, run = setup
    run.mkdir()
    (run / LOCK_FILE).write_text("999999999")
    assert actions(run_stages(pipeline([]), load_config(cfg_file), run))["train"] == "ran"


def test_failed_stage_is_recorded_and_retried(setup):
    cfg_file, data, run = setup
    (data / "cases.txt").unlink()
    with pytest.raises(FileNotFoundError):
        run_stages(pipeline([]), load_config(cfg_file), run)
    record = load_records(run)["ingest"]
    assert record.status == "failed" and "FileNotFoundError" in record.error
    (data / "cases.txt").write_text("a b")
    assert actions(run_stages(pipeline([]), load_config(cfg_file), run))["ingest"] == "ran"


def test_stage_without_its_outputs_is_an_error(setup):
    cfg_file, _, run = setup
    liar = [Stage("liar", lambda ctx: StageResult(("never_written.txt",)))]
    with pytest.raises(OutputError, match="did not write its outputs"):
        run_stages(liar, load_config(cfg_file), run)
    assert load_records(run)["liar"].status == "failed"

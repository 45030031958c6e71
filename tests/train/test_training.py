"""End-to-end training on tiny synthetic spheres: learning, logs, exact resume, budgets."""

from __future__ import annotations

import csv
import math
import time

import pytest
import torch

from medseg.inference.postprocess import ComponentEvidence
from medseg.models import load_checkpoint
from medseg.train import loop
from medseg.train.api import train_session
from tests.train.helpers import session, with_changes

pytestmark = pytest.mark.slow  # trains networks (tiny ones, seconds each)


@pytest.mark.parametrize("config,epochs", [("3d", 8), ("2d", 20)])
def test_model_learns_spheres_to_high_dice(tmp_path, config: str, epochs: int) -> None:
    s = session(tmp_path, config)
    result = train_session(s, epochs=epochs)
    assert result.epochs == epochs
    assert min(result.final_dice.values()) > 0.9, result.final_dice  # held-out cases
    assert result.checkpoint_best.is_file() and result.checkpoint_last.is_file()


def test_logs_and_checkpoint_contents(tmp_path) -> None:
    s = session(tmp_path, filters=(4, 8, 16))
    train_session(s, epochs=3)
    rows = list(csv.DictReader((s.fold_dir / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert math.isnan(float(rows[0]["dice_mean"])) and not math.isnan(float(rows[1]["dice_mean"]))
    assert (s.fold_dir / "progress.png").stat().st_size > 1000
    assert any((s.fold_dir / "tb").iterdir())
    ckpt = load_checkpoint(s.fold_dir / "checkpoint_last.pt", s.plan, "3d")
    assert ckpt["epoch"] == 3 and ckpt["scheduler"]["total_epochs"] == 3
    assert set(ckpt["rng"]) >= {"torch", "numpy", "python"}
    evidence = ComponentEvidence.from_dict(ckpt["postprocessing"])  # the last validation's
    n_val = len(s.val_cases)
    assert len(evidence.dice) == len(s.class_names) and max(evidence.cases) <= n_val
    assert evidence.dice == pytest.approx([float(rows[-1][f"dice_{n}"]) for n in s.class_names])
    assert (tmp_path / "splits.json").is_file()


class Killed(Exception):
    pass


def test_interrupted_then_resumed_matches_uninterrupted(tmp_path, monkeypatch) -> None:
    settings = with_changes(num_workers=1)
    full = session(tmp_path / "full", settings=settings, filters=(4, 8, 16))
    reference = train_session(full, epochs=4)

    finish = loop.finish_epoch

    def finish_then_die(session, progress, *args):
        finish(session, progress, *args)
        if progress.epoch == 2:
            raise Killed  # like kill -9 right after the epoch-2 checkpoint

    monkeypatch.setattr(loop, "finish_epoch", finish_then_die)
    first = session(tmp_path / "cut", settings=settings, filters=(4, 8, 16))
    with pytest.raises(Killed):
        train_session(first, epochs=4)
    monkeypatch.setattr(loop, "finish_epoch", finish)
    resumed = train_session(session(tmp_path / "cut", settings=settings, filters=(4, 8, 16)),
                            epochs=99, resume=True)  # the saved schedule wins

    assert resumed.epochs == reference.epochs == 4
    rows_full = list(csv.DictReader((full.fold_dir / "metrics.csv").open()))
    rows_cut = list(csv.DictReader((first.fold_dir / "metrics.csv").open()))
    assert [r["lr"] for r in rows_cut] == [r["lr"] for r in rows_full]
    a = load_checkpoint(full.fold_dir / "checkpoint_last.pt")["model"]
    b = load_checkpoint(first.fold_dir / "checkpoint_last.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_time_budget_is_hard_even_when_an_epoch_is_longer(tmp_path) -> None:
    budget_s = 20.0
    started = time.perf_counter()
    s = session(tmp_path, filters=(4, 8, 16),
                settings=with_changes(iterations_per_epoch=100_000))  # one epoch >> 20 s
    result = train_session(s, max_minutes=budget_s / 60, started=started)
    wall = time.perf_counter() - started
    assert wall <= 1.05 * budget_s, wall  # set-up, steps, validation and checkpoint inside
    assert wall >= 0.6 * budget_s, wall  # and the budget was used
    assert result.epochs == 1 and result.steps >= 2
    ckpt = load_checkpoint(s.fold_dir / "checkpoint_last.pt")
    assert ckpt["epoch"] == 1 and result.final_dice  # validated and saved at the end
    rows = list(csv.DictReader((s.fold_dir / "metrics.csv").open()))
    assert float(rows[-1]["lr"]) < 0.5 * 1e-2  # the schedule decayed towards zero


def test_fold_all_trains_without_validation(tmp_path) -> None:
    s = session(tmp_path, fold="all", filters=(4, 8, 16))
    result = train_session(s, epochs=2)
    assert result.final_dice == {} and result.checkpoint_best.is_file()
    assert not s.val_cases

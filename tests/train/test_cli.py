"""``medseg train`` end to end on a tiny preprocessed Decathlon run folder."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medseg.cli.main import main
from medseg.data import load_dataset
from medseg.models import load_checkpoint
from medseg.preprocess import Plan, plan_run, preprocess_run
from medseg.train import train_fold
from medseg.train.optim import poly_lr
from tests.data.synthetic import write_decathlon

pytestmark = pytest.mark.slow  # trains networks (tiny ones, seconds each)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_dir(tmp_path):
    dataset = load_dataset(write_decathlon(tmp_path / "data", n_cases=6, n_test=1))
    run = tmp_path / "run"
    plan, _ = plan_run(dataset, run, workers=1, progress=False)
    d = plan.to_dict()
    for config in d["configurations"].values():  # a tiny network: seconds per epoch
        levels = len(config["strides"])
        config["filters"] = [4 * 2**i for i in range(levels)]
        config["batch_size"] = 2
    Plan.from_dict(d).save(run / "plan.json")
    preprocess_run(run, workers=1, progress=False)
    return run


def test_cli_trains_resumes_and_reports(run_dir, capsys) -> None:
    # fold 0 (six cases would train on all of them by default: fold auto)
    args = ["train", str(run_dir), "--fold", "0", "--epochs", "2", "--iterations-per-epoch",
            "3", "--validate-every", "1", "--workers", "0", "--device", "cpu"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 epochs" in out and "final validation Dice" in out
    fold = run_dir / "train" / "3d" / "fold_0"
    assert {"checkpoint_last.pt", "checkpoint_best.pt", "metrics.csv", "progress.png"} <= {
        p.name for p in fold.iterdir()}
    splits = json.loads((run_dir / "splits.json").read_text())
    assert len(splits) == 5 and sum(len(s["val"]) for s in splits) == 6  # labelled cases only
    # resuming a finished run keeps its schedule and trains no further epochs
    assert main([*args[:4], "--resume", "--epochs", "5", "--workers", "0"]) == 0
    rows = list(csv.DictReader((fold / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]


def test_api_trains_2d_on_fold_all(run_dir) -> None:
    result = train_fold(run_dir, config="2d", fold="all", epochs=1, device="cpu")
    assert result.epochs == 1 and result.checkpoint_best.is_file() and result.final_dice == {}


def test_bad_arguments_are_one_line_errors(run_dir, capsys) -> None:
    assert main(["train", str(run_dir), "--config", "4d", "--epochs", "1"]) == 2
    assert "no configuration '4d'" in capsys.readouterr().err
    assert main(["train", str(run_dir / "missing"), "--epochs", "1"]) == 2
    with pytest.raises(SystemExit):
        main(["train", str(run_dir), "--fold", "first"])


def test_resume_after_kill_9_ends_like_an_uninterrupted_run(run_dir) -> None:
    args = [str(run_dir), "--fold", "0", "--epochs", "6", "--iterations-per-epoch", "4",
            "--workers", "0", "--device", "cpu", "--validate-every", "3"]
    fold = run_dir / "train" / "3d" / "fold_0"
    proc = subprocess.Popen([sys.executable, "-m", "medseg.cli.main", "train", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (fold / "checkpoint_last.pt").is_file() and \
                    load_checkpoint(fold / "checkpoint_last.pt")["epoch"] >= 2:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    killed_at = load_checkpoint(fold / "checkpoint_last.pt")["epoch"]
    assert main(["train", *args, "--resume"]) == 0
    ckpt = load_checkpoint(fold / "checkpoint_last.pt")
    assert ckpt["epoch"] == 6 and ckpt["scheduler"]["total_epochs"] == 6
    rows = list(csv.DictReader((fold / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6] and killed_at < 6
    expected = [poly_lr(1e-2, (e * 4 + 3) / 24) for e in range(6)]  # LR of each last step
    assert [float(r["lr"]) for r in rows] == pytest.approx(expected)


def test_train_fits_the_plan_to_the_measured_device_and_keeps_it_on_resume(tmp_path):
    dataset = load_dataset(write_decathlon(tmp_path / "data", n_cases=6, n_test=0))
    run = tmp_path / "run"
    plan_run(dataset, run, workers=1, progress=False)  # the nnU-Net reference, untouched
    preprocess_run(run, workers=1, progress=False)
    from medseg.train.autoplan import cost

    def slow(config):  # a device on which only small networks get enough steps
        return 5e-9 * cost(config)

    result = train_fold(run, "3d", fold=0, max_minutes=0.25, device="cpu", timer=slow)
    fitted = Plan.load(result.fold_dir / "plan.json").configuration("3d")
    reference = Plan.load(run / "plan.json").configuration("3d")
    assert cost(fitted) < cost(reference)
    assert "s/step" in fitted.reasons["network"] and fitted.training.optimizer == "adamw"
    ckpt = load_checkpoint(result.checkpoint_last)
    assert ckpt["plan"]["configurations"]["3d"]["filters"] == list(fitted.filters)
    # resuming keeps the fold's plan, whatever the device now measures
    resumed = train_fold(run, "3d", fold=0, max_minutes=0.25, device="cpu", resume=True,
                         timer=lambda config: 1e-15 * cost(config))
    assert Plan.load(resumed.fold_dir / "plan.json").configuration("3d") == fitted


def test_auto_trains_2d_when_the_budget_is_too_short_for_3d(run_dir):
    from medseg.inference import Predictor
    from medseg.train.autoplan import cost

    def slow(config):  # 3D gets a handful of steps in 15 s, 2D many more
        return 2e-7 * cost(config)

    result = train_fold(run_dir, fold=0, max_minutes=0.25, device="cpu", timer=slow)
    assert result.config == "2d" and result.fold_dir == run_dir / "train" / "2d" / "fold_0"
    assert not (run_dir / "train" / "3d").exists()
    why = Plan.load(result.fold_dir / "plan.json").auto["configuration"]
    assert "2D trains" in why and "steps of 3D" in why
    assert Predictor.load(run_dir).config == "2d"  # predict finds what auto trained
    # resuming finds the configuration auto chose, whatever the device now measures
    resumed = train_fold(run_dir, fold=0, max_minutes=0.25, device="cpu", resume=True,
                         timer=lambda config: 1e-15 * cost(config))
    assert resumed.config == "2d"


def test_whole_train_command_keeps_its_budget(run_dir):
    budget_s = 24.0
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "medseg", "train", str(run_dir), "--fold", "0", "--max-minutes",
         str(budget_s / 60), "--iterations-per-epoch", "100000", "--workers", "1"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    assert "1 epochs" in done.stdout  # one epoch would take far longer: cut short
    assert wall <= 1.05 * budget_s, wall  # imports, fitting, steps, validation, exit

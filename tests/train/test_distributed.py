"""Data-parallel training: the single-process context, and two gloo ranks under torchrun."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.core import Volume
from medseg.core.errors import ConfigError
from medseg.data import Case, Dataset
from medseg.io import write_volume
from medseg.models import load_checkpoint
from medseg.preprocess import preprocess_dataset
from medseg.train.distributed import (
    SINGLE_PROCESS,
    check_launch,
    torchrun_environment,
    unwrap,
)
from tests.sampling.synthetic import sphere_cases, sphere_plan

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 5
TRAIN_ARGS = ["--fold", "0", "--device", "cpu", "--workers", "0", "--optimizer", "adamw",
              "--lr", "1e-2", "--iterations-per-epoch", "5", "--validate-every", "2",
              "--seed", "0"]


# --- the single-process context -------------------------------------------------------------


def test_single_process_context_is_a_no_op() -> None:
    model = torch.nn.Linear(2, 2)
    assert SINGLE_PROCESS.wrap(model) is model and unwrap(model) is model
    assert SINGLE_PROCESS.is_main and not SINGLE_PROCESS.is_distributed
    assert SINGLE_PROCESS.broadcast(7) == 7 and SINGLE_PROCESS.mean(0.5) == 0.5
    assert SINGLE_PROCESS.sampler_seed(12) == 12
    assert SINGLE_PROCESS.main_first(lambda: "once") == "once"
    assert SINGLE_PROCESS.device(torch.device("cpu")) == torch.device("cpu")


def test_torchrun_environment_is_parsed_and_checked() -> None:
    assert torchrun_environment({}) is None
    ctx = torchrun_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                                "LOCAL_WORLD_SIZE": "2"})
    assert ctx is not None and (ctx.rank, ctx.world_size, ctx.local_rank) == (3, 4, 1)
    assert not ctx.is_main and ctx.sampler_seed(10) == 13
    with pytest.raises(ConfigError, match="inconsistent"):
        torchrun_environment({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(ConfigError, match="invalid"):
        torchrun_environment({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def test_single_process_training_refuses_a_multi_process_launch() -> None:
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    with pytest.raises(ConfigError, match="only `medseg train`"):
        check_launch(SINGLE_PROCESS, env)
    check_launch(SINGLE_PROCESS, {})  # a plain process
    check_launch(SINGLE_PROCESS, {**env, "WORLD_SIZE": "1", "RANK": "0"})


# --- torchrun, two gloo ranks ---------------------------------------------------------------


def make_run(root: Path) -> Path:
    """A run folder with plan.json and a preprocessed cache of 6 sphere cases."""
    spheres = sphere_cases(n=6, shape=(16, 16, 16))
    cases = []
    for case_id in spheres.case_ids:
        image, label = root / f"{case_id}.nii.gz", root / f"{case_id}_seg.nii.gz"
        write_volume(Volume(spheres.image(case_id), np.eye(4)), image)
        write_volume(Volume(spheres.label(case_id), np.eye(4)), label)
        cases.append(Case(case_id, (image,), label))
    dataset = Dataset("Spheres", root, {0: "background", 1: "left", 2: "right"}, {0: "MRI"},
                      tuple(cases))
    plan = sphere_plan(filters=(4, 8, 16), patch=(16, 16, 16))
    run = root / "run"
    plan.save(run / "plan.json")
    preprocess_dataset(dataset, plan, run, workers=1, progress=False)
    return run


def torchrun(run: Path, logs: Path, *args: str) -> subprocess.Popen[str]:
    """Start ``torchrun --nproc_per_node 2 -m medseg train`` (per-rank logs in ``logs``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--standalone", "--log-dir", str(logs), "--redirects", "3",
               "-m", "medseg", "train", str(run), *TRAIN_ARGS, *args]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen[str], timeout: float = 120) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


def rank_logs(logs: Path) -> dict[int, str]:
    """Each rank's stderr, by rank (torchrun writes <logs>/<run>/attempt_0/<rank>/)."""
    return {int(p.parent.name): p.read_text() for p in logs.rglob("stderr.log")}


def metrics(fold: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((fold / "metrics.csv").open()))


def kill_after_epoch(process: subprocess.Popen[str], fold: Path, epoch: int) -> None:
    """Interrupt the job (SIGTERM to torchrun) once ``epoch`` has been checkpointed."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if (fold / "metrics.csv").is_file() and len(metrics(fold)) >= epoch:
            process.send_signal(signal.SIGTERM)
            break
        time.sleep(0.02)
    process.communicate(timeout=60)


@pytest.mark.slow
def test_torchrun_two_ranks_train_write_once_and_resume(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    fold = run / "train" / "3d" / "fold_0"
    output = finish(torchrun(run, tmp_path / "logs", "--epochs", str(EPOCHS)))

    logs = rank_logs(tmp_path / "logs")
    assert sorted(logs) == [0, 1]
    assert "rank 0 of 2" in logs[0] and "rank 1 of 2" in logs[1]  # both ranks joined (gloo)
    assert f"trained 3d fold 0: {EPOCHS} epochs" in output + logs[0]  # rank 0 reports
    assert "trained 3d fold 0" not in logs[1]
    rows = metrics(fold)
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])  # it learns
    files = sorted(p.name for p in fold.iterdir())
    assert files == ["checkpoint_best.pt", "checkpoint_last.pt", "metrics.csv", "plan.json",
                     "progress.png", "tb"]  # one writer: no second set, no temporaries
    assert len(list((fold / "tb").iterdir())) == 1  # one TensorBoard event file
    ckpt = load_checkpoint(fold / "checkpoint_last.pt")
    assert not any(key.startswith("module.") for key in ckpt["model"])  # unwrapped weights

    # Interrupt a second job after epoch 2, resume it: it must match the uninterrupted one.
    cut = tmp_path / "cut"
    cut.mkdir()
    cut_run = make_run(cut)
    cut_fold = cut_run / "train" / "3d" / "fold_0"
    kill_after_epoch(torchrun(cut_run, cut / "logs", "--epochs", str(EPOCHS)), cut_fold, 2)
    done = load_checkpoint(cut_fold / "checkpoint_last.pt")["epoch"]
    assert 2 <= done < EPOCHS
    finish(torchrun(cut_run, cut / "logs2", "--epochs", "99", "--resume"))
    resumed = rank_logs(cut / "logs2")
    assert f"resuming 3d fold 0 at epoch {done}" in resumed[0]
    assert "rank 1 of 2" in resumed[1]
    assert [r["lr"] for r in metrics(cut_fold)] == [r["lr"] for r in rows]
    a = load_checkpoint(fold / "checkpoint_last.pt")["model"]
    b = load_checkpoint(cut_fold / "checkpoint_last.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_torchrun_two_ranks_keep_a_time_budget_shorter_than_an_epoch(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    budget_s = 24.0
    start = time.monotonic()
    output = finish(torchrun(run, tmp_path / "logs", "--max-minutes", str(budget_s / 60),
                             "--iterations-per-epoch", "100000"))
    wall = time.monotonic() - start
    logs = rank_logs(tmp_path / "logs")
    # cut short inside epoch 1, in whichever configuration auto chose for so short a budget
    trained = re.search(r"trained (3d|2d) fold 0: 1 epochs", output + logs[0])
    assert trained, output + logs[0]
    # each rank counts from its own process start; torchrun's launcher (its own start-up and
    # the ranks' teardown) adds seconds outside the ranks' budget
    assert wall <= 1.05 * budget_s + 10, wall
    rows = metrics(run / "train" / trained.group(1) / "fold_0")
    assert len(rows) == 1 and float(rows[0]["elapsed_seconds"]) <= 1.05 * budget_s

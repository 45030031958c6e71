"""Crash safety: ``medseg train`` and ``medseg predict`` killed with SIGKILL (or stopped
with Ctrl-C) mid-way, then re-run. Training resumes from its last checkpoint and ends
with the right epoch count; prediction finishes the remaining cases. Every file under a
final name loads; only hidden temporary files (``.<name>.<random>.tmp...``) may be left.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.cli.main import main
from medseg.core import Volume
from medseg.core.errors import EXIT_INTERRUPTED
from medseg.io import read_volume, write_volume
from tests.conftest import make_affine, sphere_label
from tests.data.synthetic import write_decathlon
from tests.inference.helpers import tiny_plan, write_run

TEMPORARY = re.compile(r"^\..+\.tmp")  # medseg.core.atomic's temporary names
EPOCHS = 12
N_CASES = 6


def medseg(*args: str) -> list[str]:
    return [sys.executable, "-m", "medseg.cli.main", *args]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}


def run_until(command: list[str], ready: Callable[[], bool], stderr: Path,
              sig: signal.Signals = signal.SIGKILL, timeout: float = 60) -> int:
    """Start ``command``, send it ``sig`` as soon as ``ready()``; returns its exit status.

    The child gets the default SIGINT disposition even when the test runner was started
    with SIGINT ignored (a background job), so that Python turns it into Ctrl-C.
    """
    with open(stderr, "w") as err:
        process = subprocess.Popen(
            command, env=environment(), stdout=subprocess.DEVNULL, stderr=err,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.monotonic() + timeout
        try:
            while process.poll() is None and time.monotonic() < deadline:
                if ready():
                    process.send_signal(sig)
                    break
                time.sleep(0.05)
            return process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def final_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not TEMPORARY.match(p.name))


def metrics_rows(fold_dir: Path) -> list[dict[str, str]]:
    path = fold_dir / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def checkpoint_epoch(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


@pytest.fixture
def tiny_run(tmp_path: Path) -> Path:
    """A planned and preprocessed run folder of 6 small cases with a very small network."""
    dataset = write_decathlon(tmp_path / "ds", n_cases=N_CASES, n_test=0, shape=(16, 16, 16))
    run = tmp_path / "run"
    assert main(["plan", str(dataset), "--out", str(run)]) == 0
    plan = json.loads((run / "plan.json").read_text())
    for config in plan["configurations"].values():
        config["filters"] = [8, 16, 32]
    (run / "plan.json").write_text(json.dumps(plan, indent=2))
    assert main(["preprocess", str(run), "--workers", "1"]) == 0
    return run


@pytest.mark.slow
def test_training_killed_mid_run_resumes_from_last_checkpoint(tiny_run: Path) -> None:
    fold_dir = tiny_run / "train" / "3d" / "fold_0"
    train = medseg("train", str(tiny_run), "--fold", "0", "--epochs", str(EPOCHS),
                   "--iterations-per-epoch",
                   "5", "--validate-every", "1", "--workers", "0", "--device", "cpu",
                   "--optimizer", "adamw")
    status = run_until(train, lambda: len(metrics_rows(fold_dir)) >= 3,
                       tiny_run / "killed.log")
    assert status == -signal.SIGKILL, "training finished before it could be killed"
    killed_at = checkpoint_epoch(fold_dir / "checkpoint_last.pt")
    assert 3 <= killed_at < EPOCHS
    rows_before = metrics_rows(fold_dir)[:killed_at]
    for path in final_files(fold_dir):
        if path.suffix == ".pt":
            checkpoint_epoch(path)  # every checkpoint under its final name loads

    done = subprocess.run([*train, "--resume"], env=environment(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"at epoch {killed_at}/{EPOCHS}" in done.stderr  # resumed, not restarted
    rows = metrics_rows(fold_dir)
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    assert rows[:killed_at] == rows_before  # the epochs before the kill were not re-trained
    assert checkpoint_epoch(fold_dir / "checkpoint_last.pt") == EPOCHS
    assert checkpoint_epoch(fold_dir / "checkpoint_best.pt") <= EPOCHS


def write_inputs(folder: Path, n: int) -> list[Path]:
    paths = []
    shape = (32, 32, 32)
    for i in range(n):
        rng = np.random.default_rng(i)
        array = (rng.normal(100, 10, shape) + 50 * sphere_label(shape)).astype(np.float32)
        path = folder / f"case_{i}.nii.gz"
        write_volume(Volume(array[None], make_affine((1, 1, 1), "LPS", (5, 0, 0))), path)
        paths.append(path)
    return paths


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGKILL, -signal.SIGKILL),
                                              (signal.SIGINT, EXIT_INTERRUPTED)])
def test_prediction_stopped_mid_batch_finishes_remaining_cases(
    tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    write_run(tmp_path / "model", tiny_plan(), [0])
    inputs = write_inputs(tmp_path / "inputs", 6)
    out = tmp_path / "out"
    predict = medseg("predict", "-m", str(tmp_path / "model"), "-i", str(tmp_path / "inputs"),
                     "-o", str(out), "--device", "cpu", "--no-progress")
    log = tmp_path / "stopped.log"
    stopped = run_until(predict, lambda: out.is_dir() and len(final_files(out)) >= 2, log, sig)
    assert stopped == status, f"prediction was not stopped mid-batch: {log.read_text()}"
    if sig == signal.SIGINT:  # Ctrl-C: one line, exit code 130
        assert log.read_text().splitlines()[-1] == "medseg: interrupted"
    first = final_files(out)
    assert 2 <= len(first) < len(inputs)
    for path in first:
        read_volume(path)  # the outputs present after the kill are complete

    done = subprocess.run(predict, env=environment(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{len(inputs) - len(first)} predicted, {len(first)} skipped, 0 failed" in done.stdout
    outputs = final_files(out)
    assert [p.name for p in outputs] == [p.name for p in inputs]
    for source, output in zip(inputs, outputs, strict=True):
        label, image = read_volume(output), read_volume(source)
        assert label.spatial_shape == image.spatial_shape
        np.testing.assert_allclose(label.affine, image.affine, atol=1e-5)

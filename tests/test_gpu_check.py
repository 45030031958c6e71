"""`make gpu-check ARGS=--dry-run`: the GPU check's code, run on the CPU, passes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_gpu_check_dry_run_passes_and_writes_its_json(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path)}
    done = subprocess.run(
        ["make", "-s", "gpu-check", "ARGS=--dry-run", f"GPU_PY={sys.executable}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])  # one JSON line, last
    assert result == json.loads((tmp_path / "gpu_check.json").read_text())
    status = {c["name"]: c["status"] for c in result["checks"]}
    assert result["passed"] and result["dry_run"] and set(status.values()) == {"pass"}
    assert set(status) == {"environment", "data", "train_fp16", "train_bf16", "loader",
                           "predict_agreement", "oom_retry", "ddp", "throughput"}
    checks = {c["name"]: c["details"] for c in result["checks"]}
    assert checks["train_fp16"]["grad_scaler"] and checks["loader"]["fallback_same_batches"]
    assert checks["oom_retry"]["retries"] >= 1 and checks["ddp"]["ddp_wrapped"] == \
        "DistributedDataParallel"
    assert "GPU CHECK: PASS" in done.stderr

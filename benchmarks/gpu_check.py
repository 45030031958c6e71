"""GPU readiness check: medseg's CUDA paths in one command, with a pass/fail summary.

    make gpu-check                      # a CUDA GPU: about 3-5 minutes on one H200 (< 8)
    make gpu-check ARGS=--dry-run       # the same code on the CPU, tiny sizes (< 1 minute)
    python benchmarks/gpu_check.py [--dry-run] [--out DIR] [--device cuda]

Checks, each ``pass``, ``fail`` or ``skip`` with its numbers (one failing does not stop
the others):

- ``environment``: torch/CUDA versions, the GPU, bf16 support, ``/dev/shm`` size;
- ``train_fp16``: a few epochs of medseg training (``build_session`` + ``train_session``)
  with float16 autocast and ``GradScaler`` on the device, ending with a validation
  (sliding window on the device): losses finite and decreasing, scaler enabled;
- ``train_bf16``: the same with ``precision="bf16"`` (bfloat16 where the GPU has it, the
  float16 fallback where it does not: which one ran is reported);
- ``loader``: the session's loader hands batches over through the shared-memory ring in
  ``/dev/shm`` into pinned memory; with ``/dev/shm`` faked full, the pipe fallback gives the
  same batches;
- ``predict_agreement``: the trained checkpoint predicts on the device (mixed precision
  and float32) and on the CPU (float32): Dice >= 0.99 between them;
- ``oom_retry``: a real CUDA out-of-memory (per-process memory cap) in batch prediction is
  retried with fewer windows and gives the uncapped labels (dry run: an injected OOM);
- ``ddp``: ``torch.distributed.run`` with one process per GPU (at most 2; gloo on the CPU),
  NCCL process group, medseg's DDP session trains one epoch; weights equal on all ranks;
- ``throughput``: iterations/s of the training step, batches/s of the augmenting loader,
  loader + step iterations/s, and volumes/s of sliding-window prediction, each for medseg
  and for MONAI's recipe (``gpu_check_monai.py``) with the same network on the same device;
  peak GPU memory of each check.

Writes ``gpu_check.json`` into ``--out`` (default: ``$OUT`` if set, else
``./gpu_check_out``), prints a summary table on stderr and the same JSON as one line on
stdout. Exit status 0 when no check failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gpu_check_dist import check_ddp, check_throughput, ddp_worker
from gpu_check_parts import (
    Sizes,
    check_loader,
    check_oom_retry,
    check_predict_agreement,
    make_run,
    train,
)

DRY, REAL = Sizes.dry(), Sizes.real()


@dataclass
class Outcome:
    name: str
    status: str  # "pass" | "fail" | "skip"
    seconds: float
    details: dict[str, Any]
    peak_gpu_gb: float | None = None


def run_check(name: str, fn: Callable[[], dict[str, Any]], device: torch.device) -> Outcome:
    """Run one check; an exception or ``{"ok": False}`` fails it, ``{"skip": reason}``
    skips it."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        details = fn()
        status = "skip" if "skip" in details else ("pass" if details.pop("ok") else "fail")
    except Exception as exc:  # reported, and the other checks still run
        details = {"error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc().splitlines()[-8:]}
        status = "fail"
    peak = (round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            if device.type == "cuda" else None)
    return Outcome(name, status, round(time.perf_counter() - start, 1), details, peak)


def environment(device: torch.device) -> dict[str, Any]:
    from medseg.sampling.ring import SHM_DIR, shm_free_bytes

    info: dict[str, Any] = {"ok": True, "torch": torch.__version__, "cuda": torch.version.cuda,
                            "device": str(device), "cpus": os.cpu_count(),
                            "load_avg_1min": round(os.getloadavg()[0], 1)}
    free = shm_free_bytes()
    info["dev_shm_free_gb"] = None if free is None else round(free / 2**30, 2)
    info["dev_shm"] = SHM_DIR
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpus=torch.cuda.device_count(),
                    memory_gb=round(props.total_memory / 2**30, 1),
                    capability=list(torch.cuda.get_device_capability(device)),
                    bf16=torch.cuda.is_bf16_supported(), nccl=torch.distributed.is_nccl_available())
    return info


def summary_lines(outcomes: list[Outcome]) -> list[str]:
    lines = [f"{'check':18} {'status':6} {'seconds':>8} {'peak GPU GB':>11}  details"]
    for o in outcomes:
        peak = "-" if o.peak_gpu_gb is None else f"{o.peak_gpu_gb:.2f}"
        brief = json.dumps({k: v for k, v in o.details.items() if k != "traceback"})
        lines.append(f"{o.name:18} {o.status:6} {o.seconds:8.1f} {peak:>11}  {brief[:160]}")
    failed = [o.name for o in outcomes if o.status == "fail"]
    lines.append("GPU CHECK: " + ("PASS" if not failed else f"FAIL ({', '.join(failed)})"))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (< 1 min)")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --dry-run)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for gpu_check.json (default: $OUT, else ./gpu_check_out)")
    parser.add_argument("--ddp-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    sizes = DRY if args.dry_run else REAL
    if args.dry_run:  # a check of the code paths: one thread is fastest on a busy CPU
        os.environ["OMP_NUM_THREADS"] = "1"  # the DDP worker processes too
        torch.set_num_threads(1)
    device = torch.device(args.device or ("cpu" if args.dry_run else "cuda"))
    if args.ddp_worker:  # one rank under torch.distributed.run: rank 0 prints its report
        report = ddp_worker(args.ddp_worker, device, sizes)
        if report:
            print(json.dumps(report), flush=True)
        return 0
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (use --dry-run to check the code on the CPU)",
              file=sys.stderr)
        return 2
    out = args.out or Path(os.environ.get("OUT") or "gpu_check_out")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    outcomes = [run_check("environment", lambda: environment(device), device)]
    with tempfile.TemporaryDirectory(prefix="medseg-gpu-check-") as tmp:
        state: dict[str, Any] = {}
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("data", lambda: make_run(Path(tmp), sizes, state)),
            ("train_fp16", lambda: train(state, device, sizes, "fp16")),
            ("train_bf16", lambda: train(state, device, sizes, "bf16")),
            ("loader", lambda: check_loader(state, device, sizes)),
            ("predict_agreement", lambda: check_predict_agreement(state, device, sizes)),
            ("oom_retry", lambda: check_oom_retry(state, device, sizes)),
            ("ddp", lambda: check_ddp(state, device, sizes, Path(__file__))),
            ("throughput", lambda: check_throughput(state, device, sizes)),
        ]
        for name, fn in steps:
            if name != "data" and "run_dir" not in state:
                outcomes.append(Outcome(name, "skip", 0.0, {"skip": "no data"}))
                continue
            outcomes.append(run_check(name, fn, device))
            print(f"gpu-check: {name} {outcomes[-1].status} ({outcomes[-1].seconds:.1f} s)",
                  file=sys.stderr, flush=True)
    result = {"benchmark": "gpu_check", "date": time.strftime("%Y-%m-%d %H:%M"),
              "dry_run": args.dry_run, "sizes": asdict(sizes),
              "seconds": round(time.perf_counter() - started, 1),
              "passed": not any(o.status == "fail" for o in outcomes),
              "checks": [asdict(o) for o in outcomes]}
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1))
    print("\n".join(summary_lines(outcomes)), file=sys.stderr)
    print(json.dumps(result))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())

"""The ``ddp`` and ``throughput`` checks of ``gpu_check.py``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
import torch.distributed as torch_dist
from gpu_check_monai import monai_loader, monai_predict, monai_step, rate
from gpu_check_parts import Sizes, dice, session_for, synthetic_case, train_settings

from medseg.inference.predictor import InferenceSettings, Predictor
from medseg.models import build_network, load_checkpoint
from medseg.preprocess import open_cache
from medseg.train.api import build_session, train_session
from medseg.train.distributed import DistContext, shutdown, torchrun_environment, unwrap
from medseg.train.loop import train_step

# --- DDP -------------------------------------------------------------------------------------


def check_ddp(state: dict[str, Any], device: torch.device, sizes: Sizes, script: Path
              ) -> dict[str, Any]:
    """``torch.distributed.run`` with one process per GPU (at most 2; 1 on the CPU)."""
    procs = min(2, torch.cuda.device_count()) if device.type == "cuda" else 1
    if sizes.name == "dry":  # the same worker in this process: no second interpreter
        return _report(_in_process_rank(state["run_dir"], device, sizes))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={procs}", str(script), "--ddp-worker", str(state["run_dir"]),
           "--device", device.type, *(["--dry-run"] if sizes.name == "dry" else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(script.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"ok": False, "returncode": done.returncode, "stderr": done.stderr[-1500:]}
    return _report(json.loads(lines[-1]))


def _report(report: dict[str, Any]) -> dict[str, Any]:
    checksums = report["checksums"]
    same = max(checksums) - min(checksums) <= 1e-6 * max(1.0, abs(checksums[0]))
    return {"ok": same and report["mean"] == 1.0 and report["broadcast"] == 0, **report}


def _in_process_rank(run_dir: Path, device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """Rank 0 of 1, run here (what torchrun would set, for the length of the call)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    with mock.patch.dict(os.environ, env):
        return ddp_worker(run_dir, device, sizes)


def ddp_worker(run_dir: Path, device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """One rank: join the process group (NCCL on CUDA, even for one process), train one
    epoch of medseg's DDP session, then compare the weights across ranks."""
    layout = torchrun_environment()
    assert layout is not None, "run under torch.distributed.run"
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(layout.local_rank)
    torch_dist.init_process_group(backend, timeout=timedelta(minutes=5))
    ctx = DistContext(layout.rank, layout.world_size, layout.local_rank,
                      layout.local_world_size, backend)
    from medseg.preprocess import Plan

    plan = Plan.load(run_dir / "plan.json")
    cache = open_cache(run_dir)
    session = build_session(plan, cache, list(cache.case_ids), run_dir, "3d", 0,
                            run_dir / "train" / "3d" / "fold_ddp", ctx.device(device),
                            train_settings(sizes, "auto"), ctx)
    result = train_session(session, epochs=1)
    checksum = float(sum(p.detach().double().sum() for p in unwrap(session.model).parameters()))
    checksums: list[Any] = [None] * ctx.world_size
    torch_dist.all_gather_object(checksums, checksum)
    report = {"backend": backend, "world_size": ctx.world_size,
              "ddp_wrapped": type(session.model).__name__, "checksums": checksums,
              "mean": ctx.mean(1.0), "broadcast": ctx.broadcast(ctx.rank),
              "seconds": round(result.seconds, 1)}
    ctx.barrier()
    shutdown(ctx)
    return report if ctx.is_main else {}


# --- throughput ------------------------------------------------------------------------------


def check_throughput(state: dict[str, Any], device: torch.device, sizes: Sizes
                     ) -> dict[str, Any]:
    """medseg vs MONAI's recipe, same network and device: step it/s, loader batches/s,
    loader + step it/s, prediction volumes/s."""
    cache, plan = state["cache"], state["plan"]
    session = session_for(state, device, sizes, "auto", "fold_speed",
                          iterations_per_epoch=3 * sizes.steps + 10)
    amp = session.amp_dtype
    batch = {k: v.to(device) for k, v in next(iter(session.loader)).items()}
    ours = {"step_it_s": rate(lambda: train_step(session, batch, 1e-3), sizes.steps, device)}
    network = build_network(plan, "3d").to(device)
    step = monai_step(network, device, amp)
    image, label = batch["image"], batch["label"].long()
    theirs = {"step_it_s": rate(lambda: step(image, label), sizes.steps, device)}

    it = iter(session.loader)
    ours["loader_batches_s"] = rate(lambda: next(it), sizes.steps, device)
    ours["loop_it_s"] = rate(lambda: train_step(session, next(it), 1e-3), sizes.steps, device)
    images = [np.asarray(cache.image(c)) for c in cache.case_ids]
    labels = [np.asarray(cache.label(c)) for c in cache.case_ids]
    loader = monai_loader(images, labels, plan.configuration("3d").patch_size,
                          sizes.batch, sizes.workers, 3 * sizes.steps + 10)
    mit = iter(loader)

    def monai_loop() -> None:
        b = next(mit)
        step(b["image"].to(device, non_blocking=True),
             b["label"].to(device, non_blocking=True).long())

    theirs["loader_batches_s"] = rate(lambda: next(mit), sizes.steps, device)
    theirs["loop_it_s"] = rate(monai_loop, sizes.steps, device)
    agreement = _prediction_rates(state, device, sizes, ours, theirs, amp)
    ratios = {k: round(ours[k] / theirs[k], 2) for k in ours if theirs.get(k)}
    return {"ok": True, "medseg": _rounded(ours), "monai": _rounded(theirs),
            "ratio_medseg_over_monai": ratios, **agreement,
            "augmentation_keeps_gpu_busy": ours["loader_batches_s"] >= ours["step_it_s"],
            "patch": list(sizes.patch), "batch": sizes.batch, "workers": sizes.workers}


def _prediction_rates(state: dict[str, Any], device: torch.device, sizes: Sizes,
                      ours: dict[str, float], theirs: dict[str, float],
                      amp: torch.dtype | None) -> dict[str, Any]:
    """Volumes/s of sliding-window prediction on preprocessed images (in-process), same
    trained weights and precision on both sides; returns their label agreement."""
    if "checkpoint" not in state:
        return {"predict": "skipped: no trained checkpoint"}
    predictor = Predictor.load(state["checkpoint"], device=device,
                               settings=InferenceSettings(amp=True))
    network = build_network(predictor.plan, "3d")  # float32 weights, MONAI autocasts
    network.load_state_dict(load_checkpoint(state["checkpoint"])["model"])
    network.to(device)
    cases = [predictor.preprocess(synthetic_case(sizes.shape, 200 + i)[0]).image
             for i in range(sizes.predict_cases)]
    patch = predictor.plan.configuration("3d").patch_size
    ours_out: list[np.ndarray] = []
    theirs_out: list[np.ndarray] = []

    def medseg_all() -> None:
        ours_out[:] = [predictor.probabilities(c).argmax(0) for c in cases]

    def monai_all() -> None:
        theirs_out[:] = monai_predict(network, cases, patch, device, amp)

    ours["predict_volumes_s"] = len(cases) * rate(medseg_all, 1, device, warmup=1)
    theirs["predict_volumes_s"] = len(cases) * rate(monai_all, 1, device, warmup=1)
    worst = min(min(dice(a, b, [1, 2]).values()) for a, b in zip(ours_out, theirs_out,
                                                                  strict=True))
    return {"predict_agreement_worst_dice": worst}


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in values.items()}

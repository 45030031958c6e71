"""The checks of ``gpu_check.py``: synthetic data, training, loader, prediction, OOM.

Every check takes the shared ``state`` (run folder, plan, trained checkpoint), the device
and the :class:`Sizes`, and returns a JSON-ready dict with ``ok`` (or ``skip``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

from medseg.core import Volume
from medseg.data import load_dataset
from medseg.inference.predictor import InferenceSettings, Predictor
from medseg.io import write_volume
from medseg.preprocess import Plan, open_cache, preprocess_dataset
from medseg.sampling import EpochSampler, PatchBatches, SamplerSettings, make_loader
from medseg.sampling import ring as ring_module
from medseg.train.api import TrainSettings, build_session, train_session
from medseg.train.settings import OptimSettings

LABELS = {"0": "background", "1": "core", "2": "rim"}


@dataclass(frozen=True)
class Sizes:
    """How big the check's data, networks and runs are."""

    name: str  # "real" | "dry"
    cases: int
    shape: tuple[int, int, int]
    patch: tuple[int, int, int]
    filters: tuple[int, ...]
    batch: int
    iterations: int  # per epoch
    epochs: int
    steps: int  # timed steps/batches of the throughput check
    predict_cases: int
    workers: int
    oom_shape: tuple[int, int, int]

    @classmethod
    def real(cls) -> Sizes:
        """nnU-Net-sized: 128^3 patches, 6 levels up to 320 filters, batch 2."""
        import os

        return cls(name="real", cases=10, shape=(144, 144, 144), patch=(128, 128, 128),
                   filters=(32, 64, 128, 256, 320, 320), batch=2, iterations=25, epochs=3,
                   steps=30, predict_cases=4, workers=min(8, max((os.cpu_count() or 2) - 1, 1)),
                   oom_shape=(256, 256, 256))

    @classmethod
    def dry(cls) -> Sizes:
        return cls(name="dry", cases=4, shape=(24, 24, 20), patch=(16, 16, 16), filters=(4, 8, 16),
                   batch=2, iterations=20, epochs=2, steps=3, predict_cases=2, workers=1,
                   oom_shape=(32, 32, 32))


# --- data ------------------------------------------------------------------------------------


def synthetic_case(shape: tuple[int, ...], seed: int) -> tuple[Volume, Volume]:
    """A noisy image with a bright ball (class 1) inside a dimmer shell (class 2)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    center = [rng.uniform(0.35, 0.65) * s for s in shape]
    radius = min(shape) * rng.uniform(0.18, 0.28)
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, center, strict=True)))
    label = np.where(dist < 0.6 * radius, 1, np.where(dist < radius, 2, 0)).astype(np.uint8)
    image = (100 + 60 * (label == 1) + 30 * (label == 2)
             + rng.normal(0, 8, shape)).astype(np.float32)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    return Volume(image[None], affine, {"case": f"case_{seed:03d}"}), Volume(label[None], affine)


def synthetic_plan(sizes: Sizes) -> Plan:
    levels = len(sizes.filters)
    return Plan.from_dict({
        "format": "medseg-plan-v1", "dataset_name": "GpuCheck", "labels": LABELS,
        "channels": {"0": "MRI"}, "target_spacing": [1.0, 1.0, 1.0],
        "normalization": [{"scheme": "zscore_nonzero"}], "image_interpolation": "linear",
        "label_interpolation": "nearest", "crop_to_nonzero": True,
        "configurations": {"3d": {
            "patch_size": list(sizes.patch), "batch_size": sizes.batch,
            "spacing": [1.0, 1.0, 1.0], "kernel_sizes": [[3, 3, 3]] * levels,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * (levels - 1),
            "filters": list(sizes.filters), "deep_supervision": True}},
    })


def make_run(tmp: Path, sizes: Sizes, state: dict[str, Any]) -> dict[str, Any]:
    """A Decathlon dataset of synthetic cases, preprocessed into a run folder."""
    root, run = tmp / "dataset", tmp / "run"
    training = []
    for i in range(sizes.cases):
        image, label = synthetic_case(sizes.shape, i)
        write_volume(image, root / "imagesTr" / f"case_{i:03d}.nii.gz")
        write_volume(label, root / "labelsTr" / f"case_{i:03d}.nii.gz")
        training.append({"image": f"./imagesTr/case_{i:03d}.nii.gz",
                         "label": f"./labelsTr/case_{i:03d}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({
        "name": "GpuCheck", "modality": {"0": "MRI"}, "labels": LABELS, "training": training}))
    plan = synthetic_plan(sizes)
    run.mkdir(parents=True)
    plan.save(run / "plan.json")
    summary = preprocess_dataset(load_dataset(root), plan, run, progress=False)
    state.update(run_dir=run, plan=plan, cache=open_cache(run))
    return {"ok": not summary.failed, "cases": sizes.cases, "shape": list(sizes.shape),
            "preprocess_s": round(summary.seconds, 1)}


# --- training --------------------------------------------------------------------------------


def train_settings(sizes: Sizes, precision: str, **changes: Any) -> TrainSettings:
    return replace(TrainSettings(
        iterations_per_epoch=sizes.iterations, validate_every=sizes.epochs,
        optim=OptimSettings(name="adamw", lr=1e-2), num_workers=sizes.workers, seed=1,
        precision=precision, n_folds=2, show_progress=False, fit_to_budget=False), **changes)


def session_for(state: dict[str, Any], device: torch.device, sizes: Sizes, precision: str,
                name: str, **changes: Any):
    cache = state["cache"]
    return build_session(state["plan"], cache, list(cache.case_ids), state["run_dir"], "3d",
                         0, state["run_dir"] / "train" / "3d" / name, device,
                         train_settings(sizes, precision, **changes))


def train(state: dict[str, Any], device: torch.device, sizes: Sizes, precision: str
          ) -> dict[str, Any]:
    """A few epochs with ``precision`` autocast; losses must be finite and decreasing."""
    session = session_for(state, device, sizes, precision, f"fold_{precision}")
    result = train_session(session, epochs=sizes.epochs)
    with open(session.fold_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    losses = [float(r["train_loss"]) for r in rows]
    if precision == "fp16":
        state["checkpoint"] = result.checkpoint_last
    dtype = str(session.amp_dtype).replace("torch.", "")
    return {"ok": all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
            and (precision != "fp16" or session.scaler.is_enabled()),
            "autocast": dtype, "fallback": precision == "bf16" and dtype == "float16",
            "grad_scaler": session.scaler.is_enabled(), "scale": session.scaler.get_scale()
            if session.scaler.is_enabled() else None, "epoch_losses": [round(v, 4) for v in losses],
            "validation_dice": {k: round(v, 4) for k, v in result.final_dice.items()},
            "seconds_per_step": round(result.seconds / (sizes.epochs * sizes.iterations), 4)}


def check_loader(state: dict[str, Any], device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """Ring transport in /dev/shm and pinned batches; the pipe fallback gives the same."""
    session = session_for(state, device, sizes, "auto", "fold_loader", num_workers=2)
    first = next(iter(session.loader))
    pinned = first["image"].is_pinned() if device.type == "cuda" else None
    cache = state["cache"]
    settings = SamplerSettings.from_config(state["plan"].configuration("3d").to_dict())

    def batches(shm_free: int | None) -> tuple[str, list[dict[str, torch.Tensor]]]:
        data = PatchBatches(cache, list(cache.case_ids), settings, None, seed=5)
        with mock.patch.object(ring_module, "shm_free_bytes", lambda path="": shm_free):
            loader = make_loader(data, EpochSampler(4), num_workers=2)
        return loader.transport, list(loader)

    ring_transport, ring = batches(None)
    pipe_transport, piped = batches(4096)  # /dev/shm faked full
    same = all(torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
               for a, b in zip(ring, piped, strict=True))
    ring = getattr(session.loader, "ring", None)
    return {"ok": session.loader.transport == "ring" and pinned is not False
            and ring_transport == "ring" and pipe_transport == "pipe" and same,
            "session_transport": session.loader.transport, "pinned": pinned,
            "ring_mib": None if ring is None else round(ring.nbytes / 2**20, 1),
            "fallback_transport": pipe_transport, "fallback_same_batches": same}


# --- prediction ------------------------------------------------------------------------------


def dice(a: np.ndarray, b: np.ndarray, labels: list[int]) -> dict[str, float]:
    out = {}
    for v in labels:
        total = int((a == v).sum() + (b == v).sum())
        out[str(v)] = 1.0 if total == 0 else round(2 * int(((a == v) & (b == v)).sum()) / total, 4)
    return out


def check_predict_agreement(state: dict[str, Any], device: torch.device, sizes: Sizes
                            ) -> dict[str, Any]:
    """The trained checkpoint on the device (AMP and float32) against the CPU (float32)."""
    if "checkpoint" not in state:
        return {"skip": "no trained checkpoint (train_fp16 failed)"}
    ckpt = state["checkpoint"]
    on_device = Predictor.load(ckpt, device=device, settings=InferenceSettings(amp=True))
    on_device32 = Predictor.load(ckpt, device=device, settings=InferenceSettings(amp=False))
    on_cpu = Predictor.load(ckpt, device="cpu", settings=InferenceSettings(amp=False))
    worst: dict[str, float] = {}
    truth_dice = []
    for seed in range(100, 100 + sizes.predict_cases):
        image, label = synthetic_case(sizes.shape, seed)
        reference = on_cpu.predict(image).labels.array[0]
        for name, predictor in (("amp", on_device), ("fp32", on_device32)):
            got = predictor.predict(image).labels.array[0]
            worst[name] = min(worst.get(name, 1.0), *dice(got, reference, [1, 2]).values())
        truth_dice.append(np.mean(list(dice(reference, label.array[0], [1, 2]).values())))
    # On a CPU dry run "amp" is bfloat16 on ~10^4-voxel cases of a barely trained network:
    # reported, but only float16 on a GPU is held to the 0.99 of the issue.
    amp_checked = device.type == "cuda"
    return {"ok": worst["fp32"] >= 0.999 and (not amp_checked or worst["amp"] >= 0.99),
            "amp_checked": amp_checked, "worst_dice_vs_cpu": worst,
            "mean_dice_vs_truth": round(float(np.mean(truth_dice)), 4)}


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class InjectedOOM(torch.nn.Module):
    """Dry run: the network, raising CUDA's out-of-memory error above ``limit`` windows."""

    def __init__(self, network: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.network, self.limit = network, limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by gpu_check)")
        return self.network(x)


def check_oom_retry(state: dict[str, Any], device: torch.device, sizes: Sizes
                    ) -> dict[str, Any]:
    """Batch prediction under a memory cap: retried with fewer windows, same labels."""
    if "checkpoint" not in state:
        return {"skip": "no trained checkpoint (train_fp16 failed)"}
    image, _ = synthetic_case(sizes.oom_shape, 7)
    ckpt = state["checkpoint"]
    reference = Predictor.load(ckpt, device=device, settings=InferenceSettings(batch_size=1))
    expected = reference.predict(image).labels.array[0]
    windows = _window_count(image.spatial_shape, sizes.patch)
    greedy = Predictor.load(ckpt, device=device, settings=InferenceSettings(batch_size=windows))
    handler = _Warnings()
    logging.getLogger("medseg.inference.oom").addHandler(handler)
    try:
        if device.type == "cuda":
            got, cap_gb = _capped_prediction(greedy, reference, image, device)
        else:
            greedy.networks[0] = InjectedOOM(greedy.networks[0], limit=1)
            got, cap_gb = greedy.predict(image).labels.array[0], None
    finally:
        logging.getLogger("medseg.inference.oom").removeHandler(handler)
    retries = [m for m in handler.messages if "out of memory" in m]
    return {"ok": bool(retries) and np.array_equal(got, expected), "windows": windows,
            "retries": len(retries), "memory_cap_gb": cap_gb,
            "last_retry": retries[-1][:200] if retries else None}


def _window_count(shape: tuple[int, ...], patch: tuple[int, ...]) -> int:
    from medseg.inference.sliding_window import window_grid

    return math.prod(len(s) for s in window_grid(shape, patch, 0.5))


def _capped_prediction(greedy: Predictor, reference: Predictor, image: Volume,
                       device: torch.device) -> tuple[np.ndarray, float]:
    """Predict with all windows in one batch under a cap that fits ~1.5 windows."""
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    reference.predict(image)  # one window per pass: its peak sets the cap
    one = torch.cuda.max_memory_allocated(device) - base
    total = torch.cuda.get_device_properties(device).total_memory
    cap = base + 1.5 * one
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(cap / total, 1.0), device)
    try:
        labels = greedy.predict(image).labels.array[0]
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()
    return labels, round(cap / 2**30, 2)

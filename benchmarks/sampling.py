"""Sampling throughput: 3D training patches per second from the hippocampus cache, for
medseg's loader and for MONAI ``CacheDataset`` + ``RandCropByPosNegLabeld``, in one run.

    python benchmarks/sampling.py [--run-dir DIR] [--batches 60] [--workers 2] [--repeats 3]

Both sides read the same preprocessed cases (medseg's cache, opened as memmaps before the
workers fork; MONAI's CacheDataset holds them in memory after its cache pass; neither
preparation is timed), draw patches of the plan's 3D patch
size with one third centred on foreground, and batch them with the same DataLoader
settings (batch size, worker processes; medseg's workers keep freed memory, see
``keep_freed_memory``: given to MONAI's workers too it made them slower, so they run with
the defaults; the in-process figures have it on for both). "aug on" adds on both sides:
mirroring on all axes, rotation and scaling (p 0.2 each), brightness, contrast, gamma,
noise and blur.
Time is the wall time to iterate ``--batches`` batches after two warm-up batches; the
median over ``--repeats`` is reported. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from monai import transforms as mt
from monai.data import CacheDataset, DataLoader

from medseg.data import load_dataset
from medseg.preprocess import Plan, open_cache, plan_run, preprocess_run
from medseg.sampling import AugmentSettings, EpochSampler, PatchBatches, SamplerSettings
from medseg.sampling import make_loader as medseg_loader
from medseg.sampling.loader import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
HIPPOCAMPUS = ROOT.parent / "shared" / "data" / "hippocampus"
KEYS = ["image", "label"]


def monai_transforms(patch: list[int], augment: bool) -> mt.Compose:
    crop = [
        mt.SpatialPadd(KEYS, spatial_size=patch),
        mt.RandCropByPosNegLabeld(KEYS, label_key="label", spatial_size=patch, pos=1, neg=2,
                                  num_samples=1),
    ]
    aug = [
        mt.RandFlipd(KEYS, prob=0.5, spatial_axis=0),
        mt.RandFlipd(KEYS, prob=0.5, spatial_axis=1),
        mt.RandFlipd(KEYS, prob=0.5, spatial_axis=2),
        mt.RandAffined(KEYS, prob=0.36, rotate_range=[np.pi / 6] * 3, scale_range=[0.2] * 3,
                       mode=["bilinear", "nearest"], padding_mode="zeros"),
        mt.RandScaleIntensityd("image", factors=0.25, prob=0.15),
        mt.RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=0.3),
        mt.RandGaussianNoised("image", std=0.1, prob=0.1),
        mt.RandGaussianSmoothd("image", sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0),
                               sigma_z=(0.5, 1.0), prob=0.2),
    ] if augment else []
    return mt.Compose([*crop, *aug, mt.EnsureTyped(KEYS, track_meta=False)])


def time_batches(loader: Iterable, n: int) -> tuple[float, float]:
    """(wall, process CPU) seconds for ``n`` batches after two warm-up batches; the CPU
    time covers the work only when the loader has no worker processes."""
    it = iter(loader)
    for _ in range(2):
        next(it)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        next(it)
    return time.perf_counter() - wall, time.process_time() - cpu


def medseg_times(cache, cases, settings, augment, batches, workers, repeats
                 ) -> list[tuple[float, float]]:
    times = []
    for r in range(repeats):
        data = PatchBatches(cache, cases, settings, AugmentSettings() if augment else None, r)
        data.open_all()  # the counterpart of CacheDataset's (untimed) cache pass
        loader = medseg_loader(data, EpochSampler(batches + 2), num_workers=workers)
        times.append(time_batches(loader, batches))
        if getattr(loader, "fallbacks", 0):  # the slow path of medseg.sampling.ring
            print(f"note: {loader.fallbacks} batch(es) bypassed the shared ring")
    return times


def monai_times(items, patch, batch_size, augment, batches, workers, repeats
                ) -> list[tuple[float, float]]:
    ds = CacheDataset(items, monai_transforms(patch, augment), num_workers=max(workers, 1),
                      progress=False)
    times = []
    for _ in range(repeats):
        sampler = torch.utils.data.RandomSampler(ds, replacement=True,
                                                 num_samples=(batches + 2) * batch_size)
        loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers)
        times.append(time_batches(loader, batches))
    return times


def summarise(times: list[tuple[float, float]], patches: int) -> tuple[float, float]:
    """(patches per second from the median wall time, median CPU ms per patch)."""
    wall = statistics.median(t[0] for t in times)
    cpu = statistics.median(t[1] for t in times)
    return patches / wall, 1000 * cpu / patches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()  # both sides, in-process; their workers get it from worker_init
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="medseg_sampling_"))
    if not (run_dir / "plan.json").is_file():
        plan_run(load_dataset(HIPPOCAMPUS), run_dir, workers=2, progress=False)
        preprocess_run(run_dir, workers=2, progress=False)
    plan = Plan.load(run_dir / "plan.json")
    config = plan.configuration("3d").to_dict()
    config["batch_size"] = args.batch_size
    cache = open_cache(run_dir)
    cases = list(cache.case_ids)
    settings = SamplerSettings.from_config(config)
    patch = list(settings.patch_size)
    items = [{"image": np.array(cache.image(c)), "label": np.array(cache.label(c))}
             for c in cases]
    patches = args.batches * args.batch_size
    rates, cpu_ms = {}, {}
    for augment in (False, True):
        tag = "aug_on" if augment else "aug_off"
        for side in ("medseg", "monai"):
            for workers in (args.workers, 0):
                if side == "medseg":
                    times = medseg_times(cache, cases, settings, augment, args.batches,
                                         workers, args.repeats)
                else:
                    times = monai_times(items, patch, args.batch_size, augment, args.batches,
                                        workers, args.repeats)
                rate, cpu = summarise(times, patches)
                if workers:
                    rates[f"{side}_{tag}"] = rate
                else:
                    cpu_ms[f"{side}_{tag}"] = cpu
    print(f"patch {patch}, batch {args.batch_size}: patches/s with {args.workers} workers | "
          "CPU ms per patch in-process")
    print(f"{'':8} {'medseg':>9} {'MONAI':>9} {'ratio':>6} | {'medseg':>7} {'MONAI':>7} "
          f"{'ratio':>6}")
    for tag in ("aug_off", "aug_on"):
        m, o = rates[f"medseg_{tag}"], rates[f"monai_{tag}"]
        mc, oc = cpu_ms[f"medseg_{tag}"], cpu_ms[f"monai_{tag}"]
        print(f"{tag:8} {m:9.1f} {o:9.1f} {m / o:5.1f}x | {mc:7.2f} {oc:7.2f} {oc / mc:5.1f}x")
    print(json.dumps({
        "benchmark": "sampling", "patch_size": patch, "batch_size": args.batch_size,
        "workers": args.workers, "batches": args.batches, "repeats": args.repeats,
        "cases": len(cases), "patches_per_s": {k: round(v, 1) for k, v in rates.items()},
        "cpu_ms_per_patch": {k: round(v, 3) for k, v in cpu_ms.items()},
        "ratio_aug_off": round(rates["medseg_aug_off"] / rates["monai_aug_off"], 2),
        "ratio_aug_on": round(rates["medseg_aug_on"] / rates["monai_aug_on"], 2),
        "cpu_ratio_aug_off": round(cpu_ms["monai_aug_off"] / cpu_ms["medseg_aug_off"], 2),
        "cpu_ratio_aug_on": round(cpu_ms["monai_aug_on"] / cpu_ms["medseg_aug_on"], 2),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)",
    }))


if __name__ == "__main__":
    main()

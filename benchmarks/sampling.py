"""Sampling throughput: 3D training patches per second from the hippocampus cache, for
medseg's loader and for MONAI ``CacheDataset`` + ``RandCropByPosNegLabeld``, in one run.

MONAI's baseline precomputes the foreground/background voxel indices with
``FgBgToIndicesd`` in its (untimed) cache pass, as MONAI documents, just as medseg's cache
holds foreground coordinates; ``monai_naive`` (indices recomputed for every sample) is an
extra row.

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
median over ``--repeats`` is reported. Prints a table on stderr, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
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
#: medseg, MONAI with precomputed indices (the baseline), MONAI recomputing them per sample
SIDES = ("medseg", "monai", "monai_naive")


def monai_transforms(patch: list[int], augment: bool, indices: bool = True) -> mt.Compose:
    """MONAI's chain; ``indices``: foreground/background indices precomputed (cached)."""
    keys = {"fg_indices_key": "label_fg_indices", "bg_indices_key": "label_bg_indices"}
    crop = [
        mt.SpatialPadd(KEYS, spatial_size=patch),
        *([mt.FgBgToIndicesd("label")] if indices else []),  # cached: before the first
        mt.RandCropByPosNegLabeld(KEYS, label_key="label", spatial_size=patch, pos=1, neg=2,
                                  num_samples=1, **(keys if indices else {})),
        mt.SelectItemsd(KEYS),  # random transform, so CacheDataset keeps the indices
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
            print(f"note: {loader.fallbacks} batch(es) bypassed the shared ring",
                  file=sys.stderr)
    return times


def monai_times(items, patch, batch_size, augment, batches, workers, repeats, indices=True
                ) -> list[tuple[float, float]]:
    ds = CacheDataset(items, monai_transforms(patch, augment, indices),
                      num_workers=max(workers, 1), progress=False)
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
    load_before = os.getloadavg()
    rates, cpu_ms = {}, {}
    for augment in (False, True):
        tag = "aug_on" if augment else "aug_off"
        for side in SIDES:
            for workers in (args.workers, 0):
                if side == "medseg":
                    times = medseg_times(cache, cases, settings, augment, args.batches,
                                         workers, args.repeats)
                else:
                    times = monai_times(items, patch, args.batch_size, augment, args.batches,
                                        workers, args.repeats, indices=side == "monai")
                rate, cpu = summarise(times, patches)
                (rates if workers else cpu_ms)[f"{side}_{tag}"] = rate if workers else cpu
    print_table(patch, args, rates, cpu_ms)
    result = {
        "benchmark": "sampling", "date": time.strftime("%Y-%m-%d"),
        "patch_size": patch, "batch_size": args.batch_size,
        "workers": args.workers, "batches": args.batches, "repeats": args.repeats,
        "cases": len(cases), "patches_per_s": {k: round(v, 1) for k, v in rates.items()},
        "cpu_ms_per_patch": {k: round(v, 3) for k, v in cpu_ms.items()},
    }
    for baseline in ("monai", "monai_naive"):
        suffix = "" if baseline == "monai" else "_vs_naive"
        for tag in ("aug_off", "aug_on"):
            result[f"ratio_{tag}{suffix}"] = round(
                rates[f"medseg_{tag}"] / rates[f"{baseline}_{tag}"], 2)
            result[f"cpu_ratio_{tag}{suffix}"] = round(
                cpu_ms[f"{baseline}_{tag}"] / cpu_ms[f"medseg_{tag}"], 2)
    result["machine"] = (f"{platform.machine()}, {os.cpu_count()} CPUs, "
                         f"{torch.get_num_threads()} torch thread(s)")
    result["load_avg_1min"] = [round(load_before[0], 1), round(os.getloadavg()[0], 1)]
    print(json.dumps(result))


def print_table(patch: list[int], args: argparse.Namespace, rates: dict[str, float],
                cpu_ms: dict[str, float]) -> None:
    """The human-readable table (stderr; stdout holds only the JSON line)."""
    out = sys.stderr
    print(f"patch {patch}, batch {args.batch_size}: patches/s with {args.workers} workers | "
          "CPU ms per patch in-process", file=out)
    print(f"{'':8} {'side':12} {'patches/s':>9} {'ratio':>6} | {'CPU ms':>7} {'ratio':>6}",
          file=out)
    for tag in ("aug_off", "aug_on"):
        for side in SIDES:
            r, c = rates[f"{side}_{tag}"], cpu_ms[f"{side}_{tag}"]
            ratio = rates[f"medseg_{tag}"] / r
            cpu_ratio = c / cpu_ms[f"medseg_{tag}"]
            print(f"{tag:8} {side:12} {r:9.1f} {ratio:5.1f}x | {c:7.2f} {cpu_ratio:5.1f}x",
                  file=out)


if __name__ == "__main__":
    main()

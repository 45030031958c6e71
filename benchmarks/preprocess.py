"""Benchmark: preprocess the shared hippocampus cases with medseg and with the equivalent
MONAI transform chain, in the same run.

    python benchmarks/preprocess.py [--root ../shared/data/hippocampus] [--repeats 3]
                                    [--workers 2]

MONAI chain: LoadImaged, EnsureChannelFirstd, Orientationd(RAS), Spacingd(plan spacing,
bilinear/nearest), NormalizeIntensityd(nonzero), CropForegroundd; each case's image and
label are then saved as .npy, so both sides produce an on-disk cache from the NIfTI files.
medseg: ``preprocess_dataset`` into a fresh cache folder (reorient, crop, normalize,
resample; cubic images) with 1 worker (same single process as MONAI) and with
``--workers`` processes, plus a re-run over the existing cache (nothing recomputed).
The two chains are first checked to give the same arrays on 10 cases (the hippocampus is
already at the planned 1 mm, so no interpolation is involved). Times are medians over the
repeats. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    Spacingd,
)

from medseg.data import Dataset, load_dataset, read_case
from medseg.preprocess import (
    Plan,
    compute_fingerprint,
    plan_dataset,
    preprocess_case,
    preprocess_dataset,
)

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hippocampus"


def monai_chain(spacing: tuple[float, ...]) -> Compose:
    keys = ["image", "label"]
    return Compose([
        LoadImaged(keys=keys, image_only=True),
        EnsureChannelFirstd(keys=keys),
        Orientationd(keys=keys, axcodes="RAS"),
        Spacingd(keys=keys, pixdim=spacing, mode=("bilinear", "nearest")),
        NormalizeIntensityd(keys="image", nonzero=True),
        CropForegroundd(keys=keys, source_key="image"),
    ])


def check_same(dataset: Dataset, plan: Plan, n_cases: int = 10) -> None:
    """Both chains must produce the same arrays before their speed means anything."""
    chain = monai_chain(plan.target_spacing)
    for case in dataset.cases[:n_cases]:
        theirs = chain({"image": str(case.images[0]), "label": str(case.label)})
        ours = preprocess_case(*read_case(case), plan)
        image, label = np.asarray(theirs["image"]), np.asarray(theirs["label"])
        if not (image.shape == ours.image.shape and np.allclose(image, ours.image, atol=1e-4)
                and np.array_equal(label, ours.label)):
            raise SystemExit(f"medseg and MONAI disagree on {case.case_id}")


def run_monai(dataset: Dataset, plan: Plan, out: Path) -> None:
    chain = monai_chain(plan.target_spacing)
    out.mkdir(parents=True)
    for case in dataset.cases:
        item = chain({"image": str(case.images[0]), "label": str(case.label)})
        np.save(out / f"{case.case_id}.npy", np.asarray(item["image"], dtype=np.float32))
        np.save(out / f"{case.case_id}_seg.npy", np.asarray(item["label"], dtype=np.uint8))


def run_medseg(dataset: Dataset, plan: Plan, out: Path, workers: int) -> None:
    summary = preprocess_dataset(dataset, plan, out, workers=workers, progress=False)
    if summary.failed or summary.computed != len(dataset.cases):
        raise SystemExit(f"medseg preprocessing did not compute every case:\n{summary.text()}")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def timed(fn: Callable[[Path], None], out: Path) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds of this process, bytes written to a fresh ``out``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(out)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    size = folder_bytes(out)
    shutil.rmtree(out)
    return wall, cpu, size


def run(root: Path, repeats: int, workers: int) -> dict:
    dataset = load_dataset(root)
    plan = plan_dataset(dataset, compute_fingerprint(dataset, progress=False))
    check_same(dataset, plan)
    contenders: dict[str, Callable[[Path], None]] = {
        "monai": lambda out: run_monai(dataset, plan, out),
        "medseg_1worker": lambda out: run_medseg(dataset, plan, out, 1),
        f"medseg_{workers}workers": lambda out: run_medseg(dataset, plan, out, workers),
    }
    samples: dict[str, list[tuple[float, float, int]]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory(prefix="medseg_bench_") as tmp:
        scratch = Path(tmp)
        names = list(contenders)
        for r in range(repeats):  # rotate the order so load changes hit everyone alike
            for name in names[r % len(names):] + names[:r % len(names)]:
                samples[name].append(timed(contenders[name], scratch / f"{name}_{r}"))
        run_medseg(dataset, plan, scratch / "reuse", workers)
        start = time.perf_counter()
        preprocess_dataset(dataset, plan, scratch / "reuse", workers=workers, progress=False)
        reuse_s = time.perf_counter() - start
    wall = {n: statistics.median(s[0] for s in v) for n, v in samples.items()}
    cpu = {n: statistics.median(s[1] for s in v) for n, v in samples.items()}
    result = {
        "benchmark": "preprocess", "cases": len(dataset.cases), "repeats": repeats,
        "workers": workers, "cpus": os.cpu_count(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    result.update({f"{n}_s": round(t, 3) for n, t in wall.items()})
    result["medseg_reuse_s"] = round(reuse_s, 3)
    result.update({f"ratio_monai_over_{n}": round(wall["monai"] / t, 2)
                   for n, t in wall.items() if n != "monai"})
    result["monai_cpu_s"] = round(cpu["monai"], 3)
    result["medseg_1worker_cpu_s"] = round(cpu["medseg_1worker"], 3)
    result["cpu_ratio_monai_over_medseg_1worker"] = round(
        cpu["monai"] / cpu["medseg_1worker"], 2)
    result["monai_cache_mib"] = round(samples["monai"][0][2] / 2**20, 1)
    result["medseg_cache_mib"] = round(samples["medseg_1worker"][0][2] / 2**20, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    result = run(args.root, args.repeats, args.workers)
    for key, value in result.items():
        print(f"{key:>36}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

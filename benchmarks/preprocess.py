"""Benchmark: preprocess the shared hippocampus cases with medseg and with the equivalent
MONAI transform chain, side by side in one run.

    python benchmarks/preprocess.py [--root ../shared/data/hippocampus] [--repeats 3]
                                    [--workers 2]

Headline, whole processes (start-up included), each from the NIfTI files to an on-disk
cache, ``--workers`` worker processes on both sides:

* medseg: ``medseg plan ROOT --out RUN`` then ``medseg preprocess RUN --workers W`` (two
  processes: validation, fingerprint and planning included);
* MONAI: one process running LoadImaged, EnsureChannelFirstd, Orientationd(RAS),
  Spacingd(plan spacing, bilinear/nearest), NormalizeIntensityd(nonzero), CropForegroundd
  and saving image and label as .npy, in a MONAI ``DataLoader`` with W workers (the
  spacing is given: MONAI does no planning).

In-process rows (labelled ``in_process``): the MONAI chain in a loop vs
``preprocess_dataset`` with 1 and W workers, and a re-run over the existing cache (nothing
recomputed). Start-up: ``medseg preprocess --help`` vs ``import monai.transforms``.
The two chains are first checked to give the same arrays on 10 cases (the hippocampus is
already at the planned 1 mm, so no interpolation is involved). Times are medians over the
repeats, contenders in rotating order. Prints a table on stderr, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from preprocess_monai import monai_chain, run_chain, training_items

from medseg.data import Dataset, load_dataset, read_case
from medseg.preprocess import (
    Plan,
    compute_fingerprint,
    plan_dataset,
    preprocess_case,
    preprocess_dataset,
)

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = HERE.parent.parent / "shared" / "data" / "hippocampus"
Sample = tuple[float, float, int]  # wall s, CPU s, bytes written


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


def run_medseg(dataset: Dataset, plan: Plan, out: Path, workers: int) -> None:
    summary = preprocess_dataset(dataset, plan, out, workers=workers, progress=False)
    if summary.failed or summary.computed != len(dataset.cases):
        raise SystemExit(f"medseg preprocessing did not compute every case:\n{summary.text()}")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def in_process(fn: Callable[[Path], None], out: Path) -> Sample:
    """Wall and CPU seconds of ``fn(out)`` in this process, bytes written to ``out``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(out)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    size = folder_bytes(out)
    shutil.rmtree(out)
    return wall, cpu, size


def processes(commands: list[list[str]], out: Path) -> Sample:
    """Wall and CPU seconds (children included) of ``commands`` run one after the other."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    for cmd in commands:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    size = folder_bytes(out)
    shutil.rmtree(out)
    return wall, cpu, size


def medseg_commands(root: Path, run: Path, workers: int) -> list[list[str]]:
    medseg = [sys.executable, "-m", "medseg"]
    return [[*medseg, "plan", str(root), "--out", str(run)],
            [*medseg, "preprocess", str(run), "--workers", str(workers)]]


def monai_command(root: Path, out: Path, spacing: tuple[float, ...], workers: int
                  ) -> list[str]:
    return [sys.executable, str(HERE / "preprocess_monai.py"), str(root), str(out),
            "--spacing", *map(str, spacing), "--workers", str(workers)]


def rotated(samples: dict[str, list[Sample]], contenders: dict[str, Callable[[Path], Sample]],
            repeats: int, scratch: Path) -> None:
    """Run every contender ``repeats`` times, rotating their order (load changes hit all)."""
    names = list(contenders)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples.setdefault(name, []).append(contenders[name](scratch / f"{name}_{r}"))


def startup(repeats: int) -> dict[str, float]:
    """Median seconds to start: ``medseg preprocess --help`` vs ``import monai.transforms``."""
    commands = {"medseg_preprocess_help": [sys.executable, "-m", "medseg", "preprocess",
                                           "--help"],
                "import_monai_transforms": [sys.executable, "-c", "import monai.transforms"]}
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, cmd in commands.items():
            start = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    return {name: round(statistics.median(v), 2) for name, v in times.items()}


def run(root: Path, repeats: int, workers: int) -> dict:
    dataset = load_dataset(root)
    plan = plan_dataset(dataset, compute_fingerprint(dataset, progress=False))
    check_same(dataset, plan)
    items = training_items(root)
    spacing = tuple(plan.target_spacing)
    whole: dict[str, Callable[[Path], Sample]] = {
        "monai": lambda out: processes([monai_command(root, out, spacing, workers)], out),
        "medseg": lambda out: processes(medseg_commands(root, out, workers), out),
    }
    inproc: dict[str, Callable[[Path], Sample]] = {
        "monai": lambda out: in_process(lambda o: run_chain(items, spacing, o, 0), out),
        "medseg_1worker": lambda out: in_process(
            lambda o: run_medseg(dataset, plan, o, 1), out),
        f"medseg_{workers}workers": lambda out: in_process(
            lambda o: run_medseg(dataset, plan, o, workers), out),
    }
    load = [os.getloadavg()[0]]
    whole_samples: dict[str, list[Sample]] = {}
    inproc_samples: dict[str, list[Sample]] = {}
    with tempfile.TemporaryDirectory(prefix="medseg_bench_") as tmp:
        scratch = Path(tmp)
        rotated(whole_samples, whole, repeats, scratch / "whole")
        rotated(inproc_samples, inproc, repeats, scratch / "in_process")
        run_medseg(dataset, plan, scratch / "reuse", workers)
        start = time.perf_counter()
        preprocess_dataset(dataset, plan, scratch / "reuse", workers=workers, progress=False)
        reuse_s = time.perf_counter() - start
    load.append(os.getloadavg()[0])
    result = {
        "benchmark": "preprocess", "date": time.strftime("%Y-%m-%d"),
        "cases": len(dataset.cases), "repeats": repeats, "workers": workers,
        "whole_process": summarise(whole_samples, "monai", "medseg"),
        "in_process": summarise(inproc_samples, "monai", "medseg_1worker"),
        "in_process_reuse_s": round(reuse_s, 3),
        "startup_s": startup(repeats),
        "cache_mib": {"monai": round(whole_samples["monai"][0][2] / 2**20, 1),
                      "medseg": round(whole_samples["medseg"][0][2] / 2**20, 1)},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_avg_1min": [round(v, 1) for v in load],
    }
    return result


def summarise(samples: dict[str, list[Sample]], baseline: str, cpu_of: str) -> dict:
    """Median wall/CPU per contender, the wall ratios to ``baseline`` and one CPU ratio."""
    wall = {n: statistics.median(s[0] for s in v) for n, v in samples.items()}
    cpu = {n: statistics.median(s[1] for s in v) for n, v in samples.items()}
    out: dict = {f"{n}_s": round(t, 2) for n, t in wall.items()}
    out.update({f"{n}_cpu_s": round(t, 2) for n, t in cpu.items()})
    out["runs_s"] = {n: [round(s[0], 2) for s in v] for n, v in samples.items()}
    out.update({f"ratio_{baseline}_over_{n}": round(wall[baseline] / t, 2)
                for n, t in wall.items() if n != baseline})
    out[f"cpu_ratio_{baseline}_over_{cpu_of}"] = round(cpu[baseline] / cpu[cpu_of], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes on both sides (medseg preprocess, MONAI "
                             "DataLoader)")
    args = parser.parse_args()
    result = run(args.root.resolve(), args.repeats, args.workers)
    for key, value in result.items():
        print(f"{key:>22}: {value}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

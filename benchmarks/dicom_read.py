"""Benchmark: read every real DICOM series with medseg and with SimpleITK, in the same run.

    python benchmarks/dicom_read.py [--root ../shared/data/dicom] [--repeats 7]

Each repeat reads every series once with each reader (alternating which goes first);
times are per-series medians over the repeats. SimpleITK's time includes
``GetGDCMSeriesFileNames`` (its file discovery and sorting), as medseg's includes its own
folder scan. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medseg.io import list_series, read_volume
from medseg.io.sitk_io import sitk_to_volume

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dicom"


def read_medseg(folder: Path) -> np.ndarray:
    return read_volume(folder).array


def read_sitk(folder: Path) -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayViewFromImage(reader.Execute())


def timed(fn: Callable[[Path], object], folder: Path) -> tuple[float, float]:
    """(wall, process CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(folder)
    return time.perf_counter() - wall, time.process_time() - cpu


def check_same(folder: Path) -> None:
    """Both readers must agree before their speed means anything."""
    ours = read_volume(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    theirs = sitk_to_volume(reader.Execute(), {})
    if not (np.allclose(ours.affine, theirs.affine, atol=1e-4)
            and np.array_equal(ours.array, theirs.array)):
        raise SystemExit(f"medseg and SimpleITK disagree on {folder}")


def run(root: Path, repeats: int) -> dict:
    folders = sorted({info.folder for info in list_series(root)})
    for folder in folders:
        check_same(folder)
    times: dict[Path, dict[str, list[tuple[float, float]]]] = {
        f: {"medseg": [], "sitk": []} for f in folders
    }
    for r in range(repeats):
        for folder in folders:
            order = [("medseg", read_medseg), ("sitk", read_sitk)]
            for name, fn in order if r % 2 == 0 else order[::-1]:
                times[folder][name].append(timed(fn, folder))
    rows = [_row(root, folder, times[folder]) for folder in folders]
    total_medseg = sum(r["medseg_ms"] for r in rows)
    total_sitk = sum(r["sitk_ms"] for r in rows)
    return {
        "benchmark": "dicom_read",
        "machine": f"{platform.machine()} {platform.processor() or ''} {_cpus()} CPUs".strip(),
        "repeats": repeats,
        "series": rows,
        "total_medseg_ms": round(total_medseg, 2),
        "total_sitk_ms": round(total_sitk, 2),
        "ratio_total": round(total_medseg / total_sitk, 3),
        "ratio_median": round(statistics.median(r["ratio"] for r in rows), 3),
        "cpu_ratio_median": round(statistics.median(r["cpu_ratio"] for r in rows), 3),
    }


def _row(root: Path, folder: Path, times: dict[str, list[tuple[float, float]]]) -> dict:
    def median_ms(name: str, which: int) -> float:
        return round(statistics.median(t[which] for t in times[name]) * 1e3, 2)

    med, itk = median_ms("medseg", 0), median_ms("sitk", 0)
    med_cpu, itk_cpu = median_ms("medseg", 1), median_ms("sitk", 1)
    return {"series": str(folder.relative_to(root)), "files": len(list(folder.iterdir())),
            "medseg_ms": med, "sitk_ms": itk, "ratio": round(med / itk, 3),
            "medseg_cpu_ms": med_cpu, "sitk_cpu_ms": itk_cpu,
            "cpu_ratio": round(med_cpu / itk_cpu, 3)}


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    result = run(args.root.resolve(), args.repeats)
    print(f"{'series':<44} {'files':>5} {'medseg ms':>10} {'sitk ms':>8} {'ratio':>6} "
          f"{'cpu ratio':>9}", file=sys.stderr)
    for row in result["series"]:
        print(f"{row['series'][-44:]:<44} {row['files']:>5} {row['medseg_ms']:>10.1f} "
              f"{row['sitk_ms']:>8.1f} {row['ratio']:>6.2f} {row['cpu_ratio']:>9.2f}",
              file=sys.stderr)
    result["load_avg_1min"] = round(os.getloadavg()[0], 1)
    print(json.dumps(result))  # the one line on stdout


if __name__ == "__main__":
    main()

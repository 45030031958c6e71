"""Benchmark: surface metrics per class, medseg (one distance pass) vs MONAI's three calls.

    python benchmarks/evaluate_metrics.py [--cases 40] [--repeats 5] [--folder-cases 208]

medseg computes HD95, ASSD and NSD from one :func:`get_edge_surface_distance` pass per
class; the peer calls MONAI's ``compute_hausdorff_distance(percentile=95)``,
``compute_average_surface_distance(symmetric=True)`` and ``compute_surface_dice``, which
each repeat that pass. Inputs: real hippocampus labels against copies eroded by one voxel.
Both must agree before times count. Per-case medians over the repeats (alternating order),
then ``evaluate_folders`` wall time on ``--folder-cases`` cases with 1 and 2 workers.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_hausdorff_distance,
    compute_surface_dice,
)
from scipy import ndimage

from medseg.io import read_volume, write_volume
from medseg.metrics import evaluate_folders, surface_scores

LABELS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hippocampus" / "labelsTr"
TOLERANCE_MM = 1.0


def eroded(labels: np.ndarray) -> np.ndarray:
    out = np.zeros_like(labels)
    for value in (1, 2):
        out[ndimage.binary_erosion(labels == value)] = value
    return out


def medseg_surface(pred: np.ndarray, ref: np.ndarray, spacing: list[float]) -> list[tuple]:
    return [tuple(surface_scores(pred == v, ref == v, spacing, TOLERANCE_MM).values())
            for v in (1, 2)]


def monai_surface(pred: np.ndarray, ref: np.ndarray, spacing: list[float]) -> list[tuple]:
    def one_hot(arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.stack([arr == v for v in (0, 1, 2)])[None].astype(np.float32))

    p, r = one_hot(pred), one_hot(ref)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(p, r, percentile=95, spacing=spacing)[0]
        asd = compute_average_surface_distance(p, r, symmetric=True, spacing=spacing)[0]
        nsd = compute_surface_dice(p, r, [TOLERANCE_MM] * 2, spacing=spacing)[0]
    return [(float(hd[c]), float(asd[c]), float(nsd[c])) for c in range(2)]


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def folder_seconds(paths: list[Path], workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        gt, pred = Path(tmp) / "gt", Path(tmp) / "pred"
        gt.mkdir()
        for path in paths:
            (gt / path.name).write_bytes(path.read_bytes())
            ref = read_volume(path)
            write_volume(ref.with_array(eroded(ref.array[0])), pred / path.name)
        start = time.perf_counter()
        evaluate_folders(pred, gt, Path(tmp) / "report", workers=workers, qc_cases=10,
                         progress=False)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--folder-cases", type=int, default=208)
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = sorted(LABELS.glob("*.nii.gz"))
    cases = []
    for path in paths[: args.cases]:
        ref = read_volume(path)
        cases.append((eroded(ref.array[0]), ref.array[0], [float(s) for s in ref.spacing]))
    for case in cases:
        np.testing.assert_allclose(medseg_surface(*case), monai_surface(*case), rtol=1e-5)
    ours, peer = [], []
    for repeat in range(args.repeats):
        order = [(medseg_surface, ours), (monai_surface, peer)]
        for fn, times in order if repeat % 2 == 0 else order[::-1]:
            times.append(sum(timed(fn, *case) for case in cases) / len(cases))
    medseg_ms, monai_ms = statistics.median(ours) * 1e3, statistics.median(peer) * 1e3
    folder = {w: folder_seconds(paths[: args.folder_cases], w) for w in (1, 2)}
    print(json.dumps({
        "benchmark": "evaluate_metrics", "cases": len(cases), "repeats": args.repeats,
        "medseg_surface_ms_per_case": round(medseg_ms, 2),
        "monai_three_calls_ms_per_case": round(monai_ms, 2),
        "speedup": round(monai_ms / medseg_ms, 2),
        "folder_cases": min(args.folder_cases, len(paths)),
        "evaluate_folders_s": {str(w): round(s, 2) for w, s in folder.items()},
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"), "load_avg_1min": round(os.getloadavg()[0], 1),
    }))


if __name__ == "__main__":
    main()

"""Batch prediction through a Dask cluster (``medseg predict --workers 2``) vs the local path.

Same inputs (hippocampus held-out images copied under distinct names), same model (the
given run/checkpoint, or the hippocampus plan's 3D DynUNet randomly initialised), CPU.
Two measurements:

* end to end: ``medseg predict`` as a whole process, start-up included (for Dask: the
  local cluster's start, each worker's model load and its shutdown), median of repeats;
* steady state, in one process: an already-started cluster whose workers have loaded
  the model, vs ``predict_batch`` with a loaded predictor (volumes/s of prediction only).

The two output folders are compared (label maps must be identical).

Usage: python benchmarks/predict_distributed.py [--model RUN_OR_CHECKPOINT] [--cases 60]
Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict import held_out_cases, make_inputs, median_runs, medseg_cmd, random_model


def steady_state(model: Path, in_dir: Path, out: Path, workers: int) -> dict[str, float]:
    """Volumes/s of the local path and of a warm Dask cluster (models already loaded)."""
    from medseg.inference.batch import BatchOptions, predict_batch
    from medseg.inference.distributed import (
        ModelSpec,
        dask_client,
        models_loaded,
        predict_batch_distributed,
    )
    from medseg.inference.jobs import discover_jobs
    from medseg.inference.predictor import Predictor

    options = BatchOptions(progress=False, overwrite=True)
    predictor = Predictor.load(model, device="cpu")
    jobs = discover_jobs([in_dir], list(predictor.plan.channels.values()))
    start = time.perf_counter()
    predict_batch(predictor, jobs, out / "local_warm", options)
    local_s = time.perf_counter() - start
    spec = ModelSpec(model, device="cpu")
    with dask_client(workers=workers) as client:
        predict_batch_distributed(spec, jobs[: 2 * workers], out / "warmup", options, client)
        start = time.perf_counter()
        predict_batch_distributed(spec, jobs, out / "dask_warm", options, client)
        dask_s = time.perf_counter() - start
        loads = sum(client.run(models_loaded).values())
    return {"local_volumes_per_s": round(len(jobs) / local_s, 2),
            "dask_volumes_per_s": round(len(jobs) / dask_s, 2), "model_loads": loads}


def identical(a_dir: Path, b_dir: Path) -> bool:
    """True when both folders hold the same label maps (arrays and affines)."""
    import nibabel as nib

    names = sorted(p.name for p in a_dir.glob("*.nii.gz"))
    if names != sorted(p.name for p in b_dir.glob("*.nii.gz")):
        return False
    for name in names:
        a, b = nib.load(a_dir / name), nib.load(b_dir / name)
        if not (np.array_equal(a.affine, b.affine)
                and np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="run folder or checkpoint (default: random)")
    parser.add_argument("--cases", type=int, default=60, help="volumes to predict")
    parser.add_argument("--held-out", type=int, default=20, help="distinct source cases")
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes")
    parser.add_argument("--repeats", type=int, default=3, help="end-to-end runs per side")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="medseg-bench-dask-") as tmp:
        folder = Path(tmp)
        model = args.model or random_model(folder)
        in_dir = make_inputs(held_out_cases(args.held_out), args.cases, folder / "inputs")
        commands = {
            "local": medseg_cmd(model, in_dir),
            "dask": medseg_cmd(model, in_dir, "--workers", str(args.workers)),
        }
        end_to_end = median_runs(commands, args.repeats, folder)
        same = identical(folder / "local", folder / "dask")
        warm = steady_state(model, in_dir, folder, args.workers)
        shutil.rmtree(folder / "inputs")
    local_s, dask_s = end_to_end["local"]["wall_s"], end_to_end["dask"]["wall_s"]
    print(json.dumps({
        "benchmark": "predict_distributed", "date": time.strftime("%Y-%m-%d"),
        "cases": args.cases, "workers": args.workers,
        "model": "random hippocampus 3d" if args.model is None else str(args.model),
        "end_to_end": {
            **end_to_end,
            "local_volumes_per_s": round(args.cases / local_s, 2),
            "dask_volumes_per_s": round(args.cases / dask_s, 2),
            "ratio_dask_over_local_wall": round(dask_s / local_s, 2),
        },
        "steady_state": warm, "outputs_identical": same,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average": [round(x, 1) for x in os.getloadavg()],
    }))


if __name__ == "__main__":
    main()

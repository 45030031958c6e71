"""Benchmark: plan + preprocess the 208 hippocampus cases, whole processes, medseg against
nnU-Net v2 (3d_fullres only), run alternately.

    python benchmarks/nnunet_plan_preprocess.py [--root ../shared/data/hippocampus]
                                                [--repeats 3] [--workers 2]

nnU-Net reads only its raw layout, so the cases are first exported with medseg's
exporter (``export_nnunet``, timed separately as ``export_seconds``). Then, each repeat
from empty output folders:

- medseg: ``medseg plan ROOT --out RUN`` + ``medseg preprocess RUN --workers W``
  (Decathlon folder read directly; fingerprint, plan, and the one cache every
  configuration trains from);
- nnU-Net: ``nnUNetv2_plan_and_preprocess -d 4 -c 3d_fullres -np W -npfp W``
  (fingerprint, plan, 3d_fullres preprocessing).

Reports median wall seconds, peak process-tree RSS and the ratio; one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.process_tree import machine, run_measured  # noqa: E402
from medseg.data import load_dataset  # noqa: E402
from medseg.data.nnunet_export import export_nnunet  # noqa: E402
from tests.nnunet_builder import nnunet_env  # noqa: E402

DEFAULT_ROOT = REPO.parent / "shared" / "data" / "hippocampus"
BIN = Path(sys.executable).parent
DATASET_ID = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nnunet-plan-"))
    start = time.perf_counter()
    summary = export_nnunet(load_dataset(args.root), work / "raw", DATASET_ID,
                            name="Hippocampus")
    export_seconds = time.perf_counter() - start
    before = machine()
    runs: dict[str, list] = {"medseg": [], "nnunet": []}
    for _ in range(args.repeats):
        runs["medseg"].append(medseg_run(args.root, work, args.workers))
        runs["nnunet"].append(nnunet_run(work, args.workers))
    shutil.rmtree(work)
    med = {side: {"seconds": statistics.median(r.seconds for r in rs),
                  "peak_rss_gb": statistics.median(r.peak_rss_gb for r in rs),
                  "all_seconds": [round(r.seconds, 1) for r in rs]}
           for side, rs in runs.items()}
    print(json.dumps({
        "benchmark": "nnunet_plan_preprocess", "cases": summary.training,
        "workers": args.workers, "repeats": args.repeats, **med,
        "speedup": med["nnunet"]["seconds"] / med["medseg"]["seconds"],
        "export_seconds": round(export_seconds, 1), "date": time.strftime("%Y-%m-%d"),
        "machine_before": before, "machine_after": machine(),
        "commands": {"medseg": f"medseg plan ROOT --out RUN && medseg preprocess RUN "
                               f"--workers {args.workers}",
                     "nnunet": f"nnUNetv2_plan_and_preprocess -d {DATASET_ID} -c 3d_fullres "
                               f"-np {args.workers} -npfp {args.workers}"},
    }))


def medseg_run(root: Path, work: Path, workers: int):
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    script = (f"{BIN / 'medseg'} plan {root} --out {run} && "
              f"{BIN / 'medseg'} preprocess {run} --workers {workers}")
    env = {**nnunet_env(work, small=False), "PYTHONPATH": str(REPO)}
    done = run_measured(["bash", "-c", script], env)
    if done.returncode:
        raise RuntimeError(f"medseg failed:\n{done.tail}")
    return done


def nnunet_run(work: Path, workers: int):
    shutil.rmtree(work / "preprocessed", ignore_errors=True)
    cmd = [str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c",
           "3d_fullres", "-np", str(workers), "-npfp", str(workers)]
    done = run_measured(cmd, nnunet_env(work, small=False))
    if done.returncode:
        raise RuntimeError(f"nnU-Net failed:\n{done.tail}")
    return done


if __name__ == "__main__":
    main()

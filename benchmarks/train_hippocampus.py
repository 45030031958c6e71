"""Accuracy at a CPU time budget: train 3D on hippocampus for ``--max-minutes`` on fold 0
(80% of the cases), predict the held-out 20% with the final checkpoint, map the
predictions back to the source grid and score them against the source labels.

    python benchmarks/train_hippocampus.py --max-minutes 15 [--run-dir DIR]

The plan is medseg's automatic plan with the CPU profile this benchmark documents:
filters 16-32-64-128 (the planner's 32-base network is ~4x slower per sample on CPU) and
batch size 2; AdamW 2e-3 with poly decay (the best of the settings compared in
docs/benchmarks.md). ``--threads`` defaults to 2: use 1 on a machine shared with other
jobs (OpenMP threads then spin waiting for each other). Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import medseg.models  # noqa: F401 - flush denormals before torch starts its thread pool
from medseg.data import load_dataset, read_case
from medseg.inference.sliding_window import predict_probabilities
from medseg.models import build_network, load_checkpoint, load_weights
from medseg.preprocess import Plan, invert_labels, open_cache, plan_run, preprocess_run
from medseg.sampling import AugmentSettings
from medseg.train.api import TrainSettings, train_fold
from medseg.train.optim import OptimSettings
from medseg.train.splits import load_or_create_splits
from medseg.train.validation import dice_per_class

ROOT = Path(__file__).resolve().parents[1]
HIPPOCAMPUS = ROOT.parent / "shared" / "data" / "hippocampus"


def cpu_plan(run_dir: Path, filters: list[int], batch_size: int) -> Plan:
    """Rewrite the run's plan.json with the CPU network size (same preprocessing)."""
    plan = Plan.load(run_dir / "plan.json")
    d = plan.to_dict()
    d["configurations"]["3d"].update(filters=filters, batch_size=batch_size)
    plan = Plan.from_dict(d)
    plan.save(run_dir / "plan.json")
    return plan


def evaluate_held_out(run_dir: Path, checkpoint: Path, cases: list[str], mirror: bool
                      ) -> dict[str, float]:
    """Mean Dice per label of ``cases`` on their source grids."""
    ckpt = load_checkpoint(checkpoint)
    plan = Plan.from_dict(ckpt["plan"])
    net = build_network(plan, "3d")
    load_weights(net, ckpt)
    net.eval()
    cache = open_cache(run_dir)
    dataset = {c.case_id: c for c in load_dataset(HIPPOCAMPUS).cases}
    patch = plan.configuration("3d").patch_size
    scores = []
    for case in cases:
        probs = predict_probabilities(net, cache.image(case, mmap=False), patch,
                                      mirror_axes=(0, 1, 2) if mirror else ())
        predicted = invert_labels(probs.argmax(0), cache.record(case))
        _, truth = read_case(dataset[case])
        scores.append(dice_per_class(predicted.array[0], truth.array[0], plan.n_classes))
    names = [plan.labels[k] for k in sorted(plan.labels) if k]
    return {n: float(np.mean(col)) for n, col in zip(names, np.array(scores).T, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-minutes", type=float, default=15.0)
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--optimizer", default="adamw", choices=["sgd", "adamw"])
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--filters", default="16,32,64,128")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--iterations-per-epoch", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--validate-every", type=int, default=20)
    parser.add_argument("--mirror-tta", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="medseg_hippo_"))

    start = time.perf_counter()
    dataset = load_dataset(HIPPOCAMPUS)
    if not (run_dir / "plan.json").is_file():
        plan_run(dataset, run_dir, workers=2, progress=False)
        preprocess_run(run_dir, workers=2, progress=False)
    plan = cpu_plan(run_dir, [int(f) for f in args.filters.split(",")], args.batch_size)
    prep_s = time.perf_counter() - start

    settings = TrainSettings(
        iterations_per_epoch=args.iterations_per_epoch, validate_every=args.validate_every,
        optim=OptimSettings(name=args.optimizer, lr=args.lr), augment=AugmentSettings(),
        num_workers=1, show_progress=sys.stderr.isatty(),
    )
    result = train_fold(run_dir, "3d", fold=0, max_minutes=args.max_minutes, device="cpu",
                        settings=settings)
    cases = [c for c in open_cache(run_dir).case_ids]
    held_out = load_or_create_splits(run_dir, cases)[0]["val"]
    t = time.perf_counter()
    dice = evaluate_held_out(run_dir, result.checkpoint_last, held_out, args.mirror_tta)
    print(json.dumps({
        "benchmark": "train_hippocampus", "max_minutes": args.max_minutes,
        "train_seconds": round(result.seconds, 1), "epochs": result.epochs,
        "iterations": result.epochs * args.iterations_per_epoch,
        "optimizer": args.optimizer, "filters": args.filters, "batch_size": args.batch_size,
        "plan_3d": plan.configuration("3d").to_dict(),
        "held_out_cases": len(held_out), "dice_source_grid": dice,
        "mean_dice": float(np.mean(list(dice.values()))),
        "validation_dice_preprocessed_grid": result.final_dice,
        "mirror_tta": args.mirror_tta, "eval_seconds": round(time.perf_counter() - t, 1),
        "prep_seconds": round(prep_s, 1), "threads": args.threads,
    }))


if __name__ == "__main__":
    main()

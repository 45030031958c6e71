"""``medseg train RUN_DIR``: train a 2D or 3D U-Net on one fold of a preprocessed run."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

from medseg.core.errors import EXIT_OK
from medseg.models.runtime import PRECISIONS, flush_denormals
from medseg.train.api import train_fold
from medseg.train.distributed import distributed
from medseg.train.settings import (
    DEFAULT_CONFIGURATION,
    DEFAULT_FOLD,
    MIN_CASES_TO_VALIDATE,
    OptimSettings,
    TrainSettings,
)


def _fold(value: str) -> int | str:
    if value in ("all", "auto"):
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"fold must be an integer, 'all' or 'auto', got {value!r}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = TrainSettings()
    parser = subparsers.add_parser(
        "train",
        help="train a network on one fold of a preprocessed run",
        description="Train the plan's 2D or 3D configuration on a fold of RUN_DIR's "
                    "preprocessed cache. Writes RUN_DIR/splits.json (once) and "
                    "RUN_DIR/train/<config>/fold_<k>/ (checkpoints, metrics.csv, "
                    "progress.png, tb/).",
    )
    parser.add_argument("run_dir", type=Path, help="run folder with plan.json and a cache")
    parser.add_argument("--config", default=DEFAULT_CONFIGURATION,
                        help="plan configuration: 3d, 2d or auto (default: 3d, or 2d when "
                             "--max-minutes is too short for 3d on this device; the reason is "
                             "in the fold's plan.json)")
    parser.add_argument("--fold", type=_fold, default=DEFAULT_FOLD,
                        help="fold index, 'all' (every case, no validation) or 'auto' "
                             f"(default: fold 0, or 'all' below {MIN_CASES_TO_VALIDATE} "
                             "labelled cases)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, default=None, help="number of epochs")
    length.add_argument("--max-minutes", type=float, default=None,
                        help="hard wall-clock budget for the whole command: the plan is "
                             "fitted to it and to this device (measured step times), the "
                             "LR schedule ends with it, and the final validation and "
                             "checkpoint fit in it")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--precision", choices=PRECISIONS, default=defaults.precision,
                        help="mixed precision (auto: fp16 on CUDA, bf16 on CPUs with "
                             "native bfloat16, else fp32)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from checkpoint_last.pt with its saved schedule")
    planned = "(default: the plan's choice, see plan.json)"
    parser.add_argument("--optimizer", choices=["sgd", "adamw"], default=None, help=planned)
    parser.add_argument("--lr", type=float, default=None, help=f"initial learning rate {planned}")
    parser.add_argument("--iterations-per-epoch", type=int, default=None, help=planned)
    parser.add_argument("--validate-every", type=int, default=None, help="epochs between "
                        f"validations (the last epoch is always validated) {planned}")
    parser.add_argument("--keep-plan", action="store_true",
                        help="train plan.json as written instead of fitting it to the device "
                             "and budget")
    parser.add_argument("--workers", type=int, default=None, help="data loader processes")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help=f"random seed (default {defaults.seed})")
    # the budget covers the whole process: exit as soon as the files are written
    parser.set_defaults(func=run, exit_at_once=True)


def process_start() -> float:
    """``time.perf_counter()`` at the start of this process (Linux: from /proc; elsewhere
    now)."""
    now = time.perf_counter()
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 (starttime), counted after the ")"
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return now
    age = uptime - started_ticks / os.sysconf("SC_CLK_TCK")
    return now - max(0.0, min(age, 60.0))


def run(args: argparse.Namespace) -> int:
    flush_denormals()  # before torch starts its threads
    settings = replace(
        TrainSettings(), iterations_per_epoch=args.iterations_per_epoch,
        validate_every=args.validate_every, num_workers=args.workers, seed=args.seed,
        optim=OptimSettings(name=args.optimizer, lr=args.lr), precision=args.precision,
        fit_to_budget=not args.keep_plan,
    )
    started = process_start()  # the budget covers the whole command, imports included
    with distributed(args.device) as dist:  # one process, or a rank under torchrun
        result = train_fold(args.run_dir, args.config, args.fold, epochs=args.epochs,
                            max_minutes=args.max_minutes, device=args.device,
                            resume=args.resume, settings=settings, dist=dist,
                            started=started)
    if not dist.is_main:
        return EXIT_OK
    dice = ", ".join(f"{k} {v:.4f}" for k, v in result.final_dice.items()) or "no validation"
    print(f"trained {result.config} fold {result.fold}: {result.epochs} epochs "
          f"({result.steps} steps) in {result.seconds / 60:.1f} min; final validation Dice: "
          f"{dice}; plan and checkpoints in {result.fold_dir}")
    return EXIT_OK

"""The epoch loop, as small functions over a :class:`Session` and its :class:`Progress`.

Every epoch ends with an atomic ``checkpoint_last.pt`` holding everything needed to
continue exactly: model, optimiser, scaler, schedule, RNG states, timings and the metric
history. Batches are a pure function of (seed, batch index) and the LR a pure function of
the step, so a resumed run replays the same schedule.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from medseg.models.checkpoint import load_checkpoint, load_weights, save_checkpoint
from medseg.models.network import PlanLike
from medseg.sampling.loader import EpochSampler, PatchSource
from medseg.train.budget import epoch_estimate, fit_total_epochs
from medseg.train.distributed import SINGLE_PROCESS, DistContext, unwrap
from medseg.train.loss import compute_loss
from medseg.train.optim import poly_lr, set_lr
from medseg.train.progress import TensorBoardLog, plot_progress, write_metrics_csv
from medseg.train.state import capture_rng, restore_rng
from medseg.train.validation import ValidationResult, validate

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Everything about the run's position that a checkpoint must restore."""

    total_epochs: int
    epoch: int = 0  # epochs completed
    budget_s: float | None = None
    elapsed_s: float = 0.0
    best_metric: float = -1.0
    epoch_seconds: list[float] = field(default_factory=list)
    validation_seconds: list[float] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    lr_anchor_epoch: int = 0  # the poly decay runs from (anchor epoch, anchor LR) to the end
    lr_anchor: float | None = None  # None: the initial LR


@dataclass
class Session:
    """The objects one training run works with."""

    plan: PlanLike
    config_name: str
    config: dict[str, Any]
    fold: int | str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    loader: Iterable[dict[str, torch.Tensor]]
    sampler: EpochSampler
    source: PatchSource
    val_cases: list[str]
    class_names: list[str]
    device: torch.device
    amp_dtype: torch.dtype | None
    initial_lr: float
    grad_clip: float
    validate_every: int
    fold_dir: Path
    show_progress: bool = True
    dist: DistContext = SINGLE_PROCESS  # torchrun rank layout (rank 0 writes, validates)


def lr_at(session: Session, progress: Progress, iteration: int) -> float:
    """Poly LR at ``iteration`` of the current epoch (per-step schedule).

    The decay runs from the anchor (the start, or the last change of the epoch count under
    a time budget) to the end, so the LR stays continuous and decreasing when the budget
    fit changes the number of epochs.
    """
    per_epoch = session.sampler.batches_per_epoch
    start = progress.lr_anchor_epoch * per_epoch
    done = progress.epoch * per_epoch + iteration - start
    anchor = session.initial_lr if progress.lr_anchor is None else progress.lr_anchor
    return poly_lr(anchor, done / max(progress.total_epochs * per_epoch - start, 1))


def change_total_epochs(session: Session, progress: Progress, total: int) -> None:
    """Set a new epoch count, re-anchoring the decay at the next step's current LR."""
    if total != progress.total_epochs:
        progress.lr_anchor = lr_at(session, progress, 0)
        progress.lr_anchor_epoch = progress.epoch
        progress.total_epochs = total


def train_step(session: Session, batch: dict[str, torch.Tensor], lr: float) -> float:
    """One optimiser step on a batch; returns the loss."""
    set_lr(session.optimizer, lr)
    image = batch["image"].to(session.device, non_blocking=True)
    label = batch["label"].to(session.device, non_blocking=True).long()  # uint8 on the wire
    with torch.autocast(session.device.type, dtype=session.amp_dtype,
                        enabled=session.amp_dtype is not None):
        output = session.model(image)
    loss = compute_loss(session.loss_fn, output, label)
    session.optimizer.zero_grad(set_to_none=True)
    session.scaler.scale(loss).backward()
    session.scaler.unscale_(session.optimizer)
    nn.utils.clip_grad_norm_(session.model.parameters(), session.grad_clip)
    session.scaler.step(session.optimizer)
    session.scaler.update()
    return float(loss.detach())


def train_epoch(session: Session, progress: Progress) -> float:
    """Run one epoch of batches; returns the mean loss."""
    session.sampler.epoch = progress.epoch
    session.model.train()
    bar = tqdm(session.loader, total=session.sampler.batches_per_epoch, leave=False,
               desc=f"epoch {progress.epoch + 1}/{progress.total_epochs}",
               disable=not session.show_progress)
    losses = []
    for i, batch in enumerate(bar):
        losses.append(train_step(session, batch, lr_at(session, progress, i)))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    return float(np.mean(losses))


def validation_guess(session: Session, progress: Progress) -> float:
    """Validation time before one was measured: one training sample's time per case."""
    per_sample = epoch_estimate(progress.epoch_seconds) / (
        session.sampler.batches_per_epoch * int(session.config["batch_size"]))
    return len(session.val_cases) * per_sample


def should_validate(session: Session, progress: Progress) -> bool:
    """Validate every few epochs and after the last one (never without validation cases)."""
    if not session.val_cases:
        return False
    n = progress.epoch  # epochs completed, including the one just trained
    return n % session.validate_every == 0 or n >= progress.total_epochs


def run_validation(session: Session, progress: Progress) -> ValidationResult:
    start = time.perf_counter()
    result = validate(unwrap(session.model), session.source, session.val_cases, session.config,
                      len(session.class_names) + 1, session.device)
    progress.validation_seconds.append(time.perf_counter() - start)
    return result


def epoch_row(session: Session, progress: Progress, loss: float,
              result: ValidationResult | None) -> dict[str, Any]:
    """One metrics.csv row (plain floats, NaN where not validated)."""
    row: dict[str, Any] = {
        "epoch": progress.epoch, "total_epochs": progress.total_epochs,
        "lr": session.optimizer.param_groups[0]["lr"], "train_loss": loss,
        "epoch_seconds": progress.epoch_seconds[-1], "elapsed_seconds": progress.elapsed_s,
    }
    dice = result.class_dice if result else [math.nan] * len(session.class_names)
    row.update({f"dice_{n}": d for n, d in zip(session.class_names, dice, strict=True)})
    row["dice_mean"] = result.mean_dice if result else math.nan
    return row


def checkpoint_payload(session: Session, progress: Progress) -> dict[str, Any]:
    return {
        "plan": session.plan.to_dict(), "config": session.config_name, "fold": session.fold,
        "model": unwrap(session.model).state_dict(), "optimizer": session.optimizer.state_dict(),
        "scheduler": {"name": "poly", "initial_lr": session.initial_lr,
                      "total_epochs": progress.total_epochs,
                      "iterations_per_epoch": session.sampler.batches_per_epoch},
        "scaler": session.scaler.state_dict(), "epoch": progress.epoch,
        "rng": capture_rng(), "best_metric": progress.best_metric,
        "progress": asdict(progress),
    }


def restore(session: Session, path: Path) -> Progress:
    """Load ``checkpoint_last.pt`` into the session; returns the saved progress."""
    ckpt = load_checkpoint(path, session.plan, session.config_name)
    load_weights(unwrap(session.model), ckpt, path)
    session.optimizer.load_state_dict(ckpt["optimizer"])
    session.scaler.load_state_dict(ckpt["scaler"])
    restore_rng(ckpt["rng"])
    return Progress(**ckpt["progress"])


def finish_epoch(session: Session, progress: Progress, loss: float,
                 result: ValidationResult | None, tb: TensorBoardLog) -> None:
    """Record the epoch, write logs and the last (and maybe best) checkpoint."""
    row = epoch_row(session, progress, loss, result)
    progress.rows.append(row)
    improved = result is not None and result.mean_dice > progress.best_metric
    if improved:
        progress.best_metric = result.mean_dice
    payload = checkpoint_payload(session, progress)
    save_checkpoint(session.fold_dir / "checkpoint_last.pt", payload)
    if improved or (not session.val_cases and progress.epoch >= progress.total_epochs):
        save_checkpoint(session.fold_dir / "checkpoint_best.pt", payload)
    write_metrics_csv(session.fold_dir / "metrics.csv", progress.rows)
    if result is not None or progress.epoch >= progress.total_epochs or progress.epoch == 1:
        plot_progress(session.fold_dir / "progress.png", progress.rows, session.class_names)
    tb.log(row)


def fit(session: Session, progress: Progress, clock: Callable[[], float] = time.perf_counter
        ) -> Progress:
    """Train until ``progress.total_epochs`` (re-fitted to the budget after each epoch)."""
    main = session.dist.is_main
    tb = TensorBoardLog(session.fold_dir / "tb") if main else None
    try:
        while progress.epoch < progress.total_epochs:
            start = clock()
            loss = session.dist.mean(train_epoch(session, progress))
            progress.epoch += 1
            progress.epoch_seconds.append(clock() - start)
            progress.elapsed_s += progress.epoch_seconds[-1]
            if progress.budget_s is not None:
                fitted = max(progress.epoch, fit_total_epochs(
                    progress.budget_s, progress.elapsed_s, progress.epoch_seconds,
                    progress.validation_seconds, session.validate_every,
                    validation_guess(session, progress)))
                change_total_epochs(session, progress, session.dist.broadcast(fitted))
            result = run_validation(session, progress) \
                if main and should_validate(session, progress) else None
            if result is not None:
                progress.elapsed_s += progress.validation_seconds[-1]
            saving = clock()
            if tb is not None:
                finish_epoch(session, progress, loss, result, tb)
            session.dist.barrier()  # other ranks wait for rank 0's validation and files
            progress.elapsed_s += clock() - saving
            _summarise(progress, loss, result)
    finally:
        if tb is not None:
            tb.close()
    return progress


def _summarise(progress: Progress, loss: float, result: ValidationResult | None) -> None:
    dice = "" if result is None else " Dice " + " ".join(f"{d:.4f}" for d in result.class_dice)
    log.info("epoch %d/%d loss %.4f (%.1fs, %.0fs total)%s", progress.epoch,
             progress.total_epochs, loss, progress.epoch_seconds[-1], progress.elapsed_s, dice)

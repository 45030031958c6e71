"""The epoch loop, as small functions over a :class:`Session` and its :class:`Progress`.

Every epoch ends with an atomic ``checkpoint_last.pt`` holding everything needed to
continue: model, optimiser, scaler, schedule, RNG states, timings and the metric history.
Batches are a pure function of (seed, batch index). With a fixed number of epochs the LR
is a pure function of the step, so a resumed run replays the same schedule exactly; under
a time budget (:mod:`medseg.train.budget`) it is a function of the elapsed time, every
step is checked against the budget, and the final validation and checkpoint fit in it.
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

from medseg.inference.sliding_window import count_windows
from medseg.models.checkpoint import load_checkpoint, load_weights, save_checkpoint
from medseg.models.network import PlanLike, network_shape
from medseg.models.runtime import synchronize
from medseg.sampling.loader import EpochSampler, PatchSource
from medseg.train.budget import (
    MARGIN_S,
    RESERVE_FACTOR,
    Timings,
    estimate_total_epochs,
    may_step,
    may_validate,
    save_estimate,
    schedule_fraction,
    training_window_s,
)
from medseg.train.distributed import SINGLE_PROCESS, DistContext, unwrap
from medseg.train.loss import compute_loss
from medseg.train.optim import poly_lr, set_lr
from medseg.train.progress import (
    TensorBoardLog,
    plot_progress,
    prepare_plotting,
    write_metrics_csv,
)
from medseg.train.state import capture_rng, restore_rng
from medseg.train.validation import ValidationResult, validate, window_batch

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Everything about the run's position that a checkpoint must restore."""

    total_epochs: int  # under a time budget: the current estimate (display only)
    epoch: int = 0  # epochs completed
    budget_s: float | None = None
    elapsed_s: float = 0.0
    best_metric: float = -1.0
    epoch_seconds: list[float] = field(default_factory=list)
    validation_seconds: list[float] = field(default_factory=list)
    save_seconds: list[float] = field(default_factory=list)
    steps: int = 0  # optimiser steps done
    step_seconds: float | None = None  # recent duration of one step (running estimate)
    window_seconds: float | None = None  # one validation window's forward pass (measured)
    rows: list[dict[str, Any]] = field(default_factory=list)
    # the latest validation's ComponentEvidence (medseg.inference.postprocess), as a dict
    postprocessing: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Progress:
        """From a checkpoint's ``progress`` (keys of older versions are ignored)."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


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
    partial_labels: bool = False  # a class absent from a case is unannotated there
    # computed once when first needed by the budget (see validation_guess, save_guess)
    val_windows: int | None = None
    save_guess_s: float | None = None


class RunClock:
    """Elapsed run time: what the checkpoint says was spent before, plus time since."""

    def __init__(self, progress: Progress, clock: Callable[[], float]) -> None:
        self.progress, self.clock = progress, clock
        self.origin = clock() - progress.elapsed_s
        self.steps = 0  # steps taken by this process (the first ones warm up)

    def sync(self) -> float:
        """Store the elapsed time in ``progress`` and return it."""
        self.progress.elapsed_s = self.clock() - self.origin
        return self.progress.elapsed_s


def timings(session: Session, progress: Progress) -> Timings:
    return Timings(progress.step_seconds, tuple(progress.validation_seconds),
                   validation_guess(session, progress), tuple(progress.save_seconds),
                   save_guess(session))


def save_guess(session: Session) -> float:
    """Checkpoint + logs before one was timed: model and optimiser state written at
    ~100 MB/s, plus the metrics plot."""
    if session.save_guess_s is None:
        params = sum(p.numel() for p in session.model.parameters())
        session.save_guess_s = 1.0 + 3 * 4 * params / 100e6
    return session.save_guess_s


def window_s(session: Session, progress: Progress) -> float:
    """End of the training window of a budgeted run (inf without a budget)."""
    if progress.budget_s is None:
        return math.inf
    return training_window_s(progress.budget_s, timings(session, progress),
                             bool(session.val_cases))


def lr_at(session: Session, progress: Progress, iteration: int) -> float:
    """Poly LR for the next step: by elapsed fraction of the training window under a
    budget, by step count otherwise (``iteration``: steps done in the current epoch)."""
    if progress.budget_s is not None:
        return poly_lr(session.initial_lr,
                       schedule_fraction(progress.elapsed_s, window_s(session, progress)))
    per_epoch = session.sampler.batches_per_epoch
    done = progress.epoch * per_epoch + iteration
    return poly_lr(session.initial_lr, done / max(progress.total_epochs * per_epoch, 1))


def train_step(session: Session, batch: dict[str, torch.Tensor], lr: float) -> float:
    """One optimiser step on a batch; returns the loss."""
    set_lr(session.optimizer, lr)
    image = batch["image"].to(session.device, non_blocking=True)
    label = batch["label"].to(session.device, non_blocking=True).long()  # uint8 on the wire
    annotated = batch.get("annotated") if session.partial_labels else None
    if annotated is not None:
        annotated = annotated.to(session.device, non_blocking=True)
    with torch.autocast(session.device.type, dtype=session.amp_dtype,
                        enabled=session.amp_dtype is not None):
        output = session.model(image)
    loss = compute_loss(session.loss_fn, output, label, annotated)
    session.optimizer.zero_grad(set_to_none=True)
    session.scaler.scale(loss).backward()
    session.scaler.unscale_(session.optimizer)
    nn.utils.clip_grad_norm_(session.model.parameters(), session.grad_clip)
    session.scaler.step(session.optimizer)
    session.scaler.update()
    return float(loss.detach())


def next_step(session: Session, progress: Progress, run_clock: RunClock,
              iteration: int) -> float | None:
    """The LR of the next step, or None when the budget leaves no time for it. Under
    torchrun rank 0 decides and broadcasts, so every rank stops at the same step and uses
    the same LR."""
    if progress.budget_s is None:
        return lr_at(session, progress, iteration)
    run_clock.sync()
    go = may_step(progress.elapsed_s, window_s(session, progress), progress.step_seconds)
    lr = lr_at(session, progress, iteration)
    go, lr = session.dist.broadcast_values([float(go), lr])
    return lr if go else None


def train_epoch(session: Session, progress: Progress, run_clock: RunClock) -> float:
    """Run one epoch of batches (fewer when the budget ends); returns the mean loss."""
    session.sampler.epoch = progress.epoch
    session.model.train()
    bar = tqdm(total=session.sampler.batches_per_epoch, leave=False,
               desc=f"epoch {progress.epoch + 1}/{progress.total_epochs}",
               disable=not session.show_progress)
    losses: list[float] = []
    batches = iter(session.loader)
    with bar:
        for i in range(session.sampler.batches_per_epoch):
            lr = next_step(session, progress, run_clock, i)
            if lr is None:
                break
            started = run_clock.clock()
            losses.append(train_step(session, next(batches), lr))
            observe_step(progress, run_clock.clock() - started, warm_up=run_clock.steps < 2)
            run_clock.steps += 1
            bar.update()
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    return float(np.mean(losses)) if losses else math.nan


def observe_step(progress: Progress, seconds: float, warm_up: bool) -> None:
    """Count a step and update the running step duration; the first step of a process
    (warm-up: first batch, allocations) stands in only until the second is measured."""
    progress.steps += 1
    previous = progress.step_seconds
    if previous is None or warm_up:
        progress.step_seconds = seconds
    else:
        progress.step_seconds = 0.8 * previous + 0.2 * seconds


def validation_guess(session: Session, progress: Progress) -> float:
    """Validation time before one was measured: the measured forward pass of a window
    (:func:`probe_window_seconds`; else half a training step per sample) times every
    sliding window of the validation cases, plus reading and scoring each case."""
    if not session.val_cases:
        return 0.0
    per_window = progress.window_seconds
    if per_window is None:
        if progress.step_seconds is None:
            return 0.0
        per_window = 0.5 * progress.step_seconds / int(session.config["batch_size"])
    if session.val_windows is None:
        patch = [int(p) for p in session.config["patch_size"]]
        slice_axis = session.config.get("slice_axis") if len(patch) == 2 else None
        session.val_windows = sum(
            count_windows(session.source.image(c).shape[1:], patch, slice_axis=slice_axis)
            for c in session.val_cases)
    return session.val_windows * per_window + 0.1 * len(session.val_cases)


@torch.no_grad()
def probe_window_seconds(session: Session) -> float:
    """Seconds per window of a validation forward pass (batched as
    :func:`medseg.train.validation.validate` does), measured on zeros: the fastest of three
    after two warm-ups. (One warm-up and one timed pass read 0.38 s per window on the
    ct_headneck network whose validation then ran at 0.13 s per window: the reserve for
    the final validation kept 6 of 30 minutes unused. Timed 2 windows at a time while
    validation runs 4 slices per pass, the 2D ct_headneck network's estimate was ~1.8x the
    validation that followed.)"""
    model = unwrap(session.model)
    was_training = model.training
    model.eval()
    patch = [int(p) for p in session.config["patch_size"]]
    channels, _ = network_shape(session.plan)
    batch = window_batch(session.config)
    x = torch.zeros(batch, channels, *patch, device=session.device)
    try:
        model(x)
        model(x)
        times = []
        for _ in range(3):
            synchronize(session.device)
            start = time.perf_counter()
            model(x)
            synchronize(session.device)
            times.append((time.perf_counter() - start) / batch)
        return min(times)
    finally:
        model.train(was_training)


def training_over(session: Session, progress: Progress) -> bool:
    """Epoch count reached, or (under a budget) no time left for another step."""
    if progress.budget_s is None:
        return progress.epoch >= progress.total_epochs
    return not may_step(progress.elapsed_s, window_s(session, progress), progress.step_seconds)


def should_validate(session: Session, progress: Progress, final: bool) -> bool:
    """Validate every few epochs, when the budget leaves room, and after the last one
    (never without validation cases)."""
    if not session.val_cases:
        return False
    if final:
        return True
    if progress.epoch % session.validate_every:
        return False
    return progress.budget_s is None or may_validate(
        progress.elapsed_s, window_s(session, progress), timings(session, progress))


def run_validation(session: Session, progress: Progress, run_clock: RunClock
                   ) -> ValidationResult:
    """Validate on the fold's validation cases; under a budget, cases that would end
    past it (leaving time for the checkpoint) are left out."""
    start = run_clock.clock()
    deadline = None
    if progress.budget_s is not None:
        save = save_estimate(timings(session, progress))
        deadline = run_clock.origin + progress.budget_s - RESERVE_FACTOR * save - MARGIN_S
    result = validate(unwrap(session.model), session.source, session.val_cases, session.config,
                      len(session.class_names) + 1, session.device,
                      partial_labels=session.partial_labels, deadline=deadline,
                      clock=run_clock.clock)
    progress.validation_seconds.append(run_clock.clock() - start)
    if result.skipped:
        log.warning("validation stopped after %d of %d case(s) to stay within the budget",
                    len(result.case_dice), len(session.val_cases))
    return result


def epoch_row(session: Session, progress: Progress, loss: float,
              result: ValidationResult | None) -> dict[str, Any]:
    """One metrics.csv row (plain floats, NaN where not validated)."""
    row: dict[str, Any] = {
        "epoch": progress.epoch, "total_epochs": progress.total_epochs,
        "steps": progress.steps,
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
        "postprocessing": progress.postprocessing, "progress": asdict(progress),
    }


def restore(session: Session, path: Path) -> Progress:
    """Load ``checkpoint_last.pt`` into the session; returns the saved progress."""
    ckpt = load_checkpoint(path, session.plan, session.config_name)
    load_weights(unwrap(session.model), ckpt, path)
    session.optimizer.load_state_dict(ckpt["optimizer"])
    session.scaler.load_state_dict(ckpt["scaler"])
    restore_rng(ckpt["rng"])
    return Progress.from_dict(ckpt["progress"])


def finish_epoch(session: Session, progress: Progress, loss: float,
                 result: ValidationResult | None, tb: TensorBoardLog, final: bool) -> None:
    """Record the epoch, write logs and the last (and maybe best) checkpoint."""
    row = epoch_row(session, progress, loss, result)
    progress.rows.append(row)
    improved = result is not None and result.mean_dice > progress.best_metric
    if improved:
        progress.best_metric = result.mean_dice
    if result is not None:
        evidence = result.component_evidence()
        progress.postprocessing = evidence.to_dict()
        if final:
            log.info("%s", evidence.describe(session.class_names))
    payload = checkpoint_payload(session, progress)
    save_checkpoint(session.fold_dir / "checkpoint_last.pt", payload)
    if improved or (not session.val_cases and final):
        save_checkpoint(session.fold_dir / "checkpoint_best.pt", payload)
    write_metrics_csv(session.fold_dir / "metrics.csv", progress.rows)
    if result is not None or final or progress.epoch == 1:
        plot_progress(session.fold_dir / "progress.png", progress.rows, session.class_names)
    tb.log(row)


def end_epoch(session: Session, progress: Progress, run_clock: RunClock, loss: float,
              tb: TensorBoardLog | None) -> bool:
    """Validate if due, write the epoch's files; returns True when training is over."""
    run_clock.sync()
    final = session.dist.broadcast_values([float(training_over(session, progress))])[0] > 0
    if progress.budget_s is not None:
        progress.total_epochs = progress.epoch if final else max(
            progress.epoch + 1, estimate_total_epochs(
                progress.epoch, progress.elapsed_s, window_s(session, progress),
                progress.epoch_seconds))
    result = None
    if session.dist.is_main and should_validate(session, progress, final):
        result = run_validation(session, progress, run_clock)
    saving = run_clock.clock()
    if tb is not None:
        finish_epoch(session, progress, loss, result, tb, final)
    session.dist.barrier()  # other ranks wait for rank 0's validation and files
    progress.save_seconds.append(run_clock.clock() - saving)
    run_clock.sync()
    _summarise(progress, loss, result)
    return final


def fit(session: Session, progress: Progress, clock: Callable[[], float] = time.perf_counter
        ) -> Progress:
    """Train until the epoch count is reached or, under a budget, until the training
    window closes (checked before every step); then validate and checkpoint."""
    main = session.dist.is_main
    tb = TensorBoardLog(session.fold_dir / "tb") if main else None
    if progress.budget_s is not None and main:
        prepare_plotting()  # its import would otherwise delay the last checkpoint
        if session.val_cases and progress.window_seconds is None:
            progress.window_seconds = probe_window_seconds(session)
    run_clock = RunClock(progress, clock)
    try:
        final = training_over(session, progress) and progress.epoch > 0
        while not final:
            start = clock()
            loss = session.dist.mean(train_epoch(session, progress, run_clock))
            progress.epoch += 1
            progress.epoch_seconds.append(clock() - start)
            final = end_epoch(session, progress, run_clock, loss, tb)
    finally:
        if tb is not None:
            tb.close()
    run_clock.sync()
    return progress


def _summarise(progress: Progress, loss: float, result: ValidationResult | None) -> None:
    dice = "" if result is None else " Dice " + " ".join(f"{d:.4f}" for d in result.class_dice)
    log.info("epoch %d/%d loss %.4f (%.1fs, %.0fs total)%s", progress.epoch,
             progress.total_epochs, loss, progress.epoch_seconds[-1], progress.elapsed_s, dice)

"""``train_fold``: train one configuration on one fold of a run folder (the Python API behind
``medseg train``).

Before the first step the run's plan is fitted to the device and the time budget
(:mod:`medseg.train.autoplan`: measured step times choose the network, patch, batch and
the schedule); the plan the fold trains with is written to its folder as ``plan.json``,
with the reason for every choice, and logged. A resumed fold keeps the plan it started
with.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from medseg.core.errors import ConfigError, DatasetError
from medseg.inference.predictor import DEFAULT_CONFIG_ORDER
from medseg.models.network import build_network
from medseg.models.runtime import (
    autocast_dtype,
    describe_device,
    device_memory_gb,
    flush_denormals,
)
from medseg.models.runtime import resolve_device as _resolve_device
from medseg.preprocess import Plan, open_cache
from medseg.preprocess.plan import Configuration, TrainingPlan
from medseg.preprocess.planning import DEFAULT_MEMORY_GB
from medseg.sampling.augment import AugmentSettings
from medseg.sampling.loader import (
    EpochSampler,
    PatchBatches,
    PatchSource,
    SamplerSettings,
    close_loader,
    make_loader,
)
from medseg.train.autoconfig import pick_configuration
from medseg.train.autoplan import Budget, describe, fit_plan
from medseg.train.distributed import SINGLE_PROCESS, DistContext, check_launch
from medseg.train.loop import Progress, Session, fit, restore
from medseg.train.loss import build_loss
from medseg.train.optim import build_optimizer
from medseg.train.settings import (
    DEFAULT_CONFIGURATION,
    DEFAULT_EPOCHS,
    DEFAULT_FOLD,
    DEFAULT_FOLDS,
    TrainSettings,
    resolve_fold,
)
from medseg.train.splits import fold_cases, load_or_create_splits
from medseg.train.steptime import StepTimer, device_timer

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class TrainResult:
    """Where a finished training left its outputs, and how it went."""

    fold_dir: Path
    config: str
    fold: int | str
    epochs: int
    best_metric: float
    final_dice: dict[str, float]
    seconds: float
    steps: int = 0

    @property
    def checkpoint_last(self) -> Path:
        return self.fold_dir / "checkpoint_last.pt"

    @property
    def checkpoint_best(self) -> Path:
        return self.fold_dir / "checkpoint_best.pt"


def resolve_device(device: str) -> torch.device:
    """The training device (``medseg.models.runtime.resolve_device``)."""
    return _resolve_device(device)


def fold_dir(run_dir: str | Path, config: str, fold: int | str) -> Path:
    return Path(run_dir) / "train" / config / f"fold_{fold}"


def _workers(requested: int | None, device: torch.device, ranks_per_node: int = 1) -> int:
    if requested is not None:
        return requested
    cpus = (os.cpu_count() or 1) // ranks_per_node
    return min(8, max(cpus - 1, 1)) if device.type == "cuda" else 1


def effective_training(config: Configuration, settings: TrainSettings) -> TrainingPlan:
    """The plan's training choices with the settings' overrides applied."""
    t = config.training
    return replace(
        t,
        iterations_per_epoch=settings.iterations_per_epoch or t.iterations_per_epoch,
        validate_every=settings.validate_every or t.validate_every,
        optimizer=settings.optim.name or t.optimizer,
        learning_rate=settings.optim.lr or t.learning_rate,
    )


def augmentation(config: Configuration, settings: TrainSettings) -> AugmentSettings | None:
    """The augmentation a fold trains with: the plan's (rotation, mirrored axes, voxel
    size), none, or the settings' own."""
    if isinstance(settings.augment, AugmentSettings):
        return settings.augment
    if not settings.augment:
        return None
    mirror = config.training.mirror_axes  # axes of the RAS-ordered volume
    if config.slice_axis is not None:  # a 2D patch's axes are the in-plane ones, in order
        in_plane = [a for a in range(3) if a != config.slice_axis]
        mirror = tuple(in_plane.index(a) for a in mirror if a in in_plane)
    return AugmentSettings.for_configuration(config.spacing, config.training.rotation,
                                             mirror_axes=mirror)


def build_session(
    plan: Plan, source: PatchSource, case_ids: list[str], splits_dir: Path,
    config_name: str, fold: int | str, out_dir: Path, device: torch.device,
    settings: TrainSettings, dist: DistContext = SINGLE_PROCESS,
) -> Session:
    """Model, optimiser, loss and loader for one fold (splits live in ``splits_dir``);
    under torchrun (``dist``) the model is DDP-wrapped and each rank samples its own
    batches."""
    config = plan.configuration(config_name)
    training = effective_training(config, settings)
    train_cases, val_cases = split_cases(splits_dir, case_ids, fold, settings, dist)
    torch.manual_seed(settings.seed)
    model = dist.wrap(build_network(plan, config_name).to(device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp = autocast_dtype(device, settings.precision)
    sampler_settings = SamplerSettings.from_config(config.to_dict(), settings.foreground_fraction)
    batches = PatchBatches(source, train_cases, sampler_settings,
                           augmentation(config, settings), dist.sampler_seed(settings.seed),
                           n_classes=plan.n_classes)
    batches.open_all()  # loader workers fork with the cases already open
    sampler = EpochSampler(training.iterations_per_epoch)
    loader = make_loader(batches, sampler,
                         _workers(settings.num_workers, device, dist.local_world_size),
                         pin_memory=device.type == "cuda")
    return Session(
        plan=plan, config_name=config_name, config=config.to_dict(), fold=fold, model=model,
        optimizer=build_optimizer(model.parameters(), training.optimizer,
                                  training.learning_rate, settings.optim),
        scaler=torch.amp.GradScaler(device.type, enabled=amp == torch.float16),
        loss_fn=build_loss(config.deep_supervision), loader=loader, sampler=sampler,
        source=source, val_cases=val_cases,
        class_names=[plan.labels[v] for v in plan.label_values if v != 0],
        device=device, amp_dtype=amp, initial_lr=training.learning_rate,
        grad_clip=settings.optim.grad_clip, validate_every=training.validate_every,
        fold_dir=out_dir, show_progress=settings.show_progress and dist.is_main, dist=dist,
        partial_labels=plan.partial_labels,
    )


def split_cases(splits_dir: Path, case_ids: list[str], fold: int | str,
                settings: TrainSettings, dist: DistContext = SINGLE_PROCESS
                ) -> tuple[list[str], list[str]]:
    """(train, validation) cases of ``fold``; ``splits.json`` is written once (rank 0)."""
    splits = ([] if fold == "all"  # every case trains: no splits needed (even for 1 case)
              else dist.main_first(lambda: load_or_create_splits(
                  splits_dir, case_ids, settings.n_folds, settings.seed)))
    return fold_cases(splits, fold, case_ids)


def initial_progress(epochs: int | None, max_minutes: float | None) -> Progress:
    if epochs is not None and max_minutes is not None:
        raise ConfigError("give either epochs or max_minutes, not both")
    if epochs is not None and epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    if max_minutes is not None:
        if max_minutes <= 0:
            raise ConfigError(f"max_minutes must be positive, got {max_minutes}")
        return Progress(total_epochs=1, budget_s=60.0 * max_minutes)
    return Progress(total_epochs=epochs or DEFAULT_EPOCHS)


def train_session(
    session: Session, epochs: int | None = None, max_minutes: float | None = None,
    resume: bool = False, started: float | None = None,
) -> TrainResult:
    """Run (or resume) training of a built session to the end of its schedule."""
    started = time.perf_counter() if started is None else started
    last = session.fold_dir / "checkpoint_last.pt"
    if resume and session.dist.broadcast(last.is_file()):  # all ranks load rank 0's
        progress = restore(session, last)
        log.info("resuming %s fold %s at epoch %d/%d", session.config_name, session.fold,
                 progress.epoch, progress.total_epochs)
    else:
        if resume:
            log.info("no checkpoint at %s: starting from scratch", last)
        progress = initial_progress(epochs, max_minutes)
    progress.elapsed_s += time.perf_counter() - started  # setup counts against the budget
    session.fold_dir.mkdir(parents=True, exist_ok=True)
    try:
        progress = fit(session, progress)
    finally:
        close_loader(session.loader)
    final = next((r for r in reversed(progress.rows) if r["dice_mean"] == r["dice_mean"]), None)
    dice = {n: final[f"dice_{n}"] for n in session.class_names} if final else {}
    log.info("trained %s fold %s: %d epochs (%d steps) in %.0fs, best Dice %.4f",
             session.config_name, session.fold, progress.epoch, progress.steps,
             progress.elapsed_s, progress.best_metric)
    return TrainResult(session.fold_dir, session.config_name, session.fold, progress.epoch,
                       progress.best_metric, dice, progress.elapsed_s, progress.steps)


def fold_plan(plan: Plan, config: str, run_dir: Path, fold: int | str, device: torch.device,
              max_minutes: float | None, validation_cases: int, resume: bool,
              settings: TrainSettings, dist: DistContext = SINGLE_PROCESS,
              timer: StepTimer | None = None) -> tuple[str, Plan]:
    """The configuration a fold trains (``"auto"`` resolved) and the plan it trains with:
    the one it started with when resuming, else ``plan`` fitted to the device and budget
    (rank 0 measures; every rank gets its plan), written to the fold folder and logged."""
    names = [n for n in DEFAULT_CONFIG_ORDER if n in plan.configurations] \
        if config == "auto" else [config]
    if resume:
        saved = [n for n in names if (fold_dir(run_dir, n, fold) / PLAN_FILE).is_file()]
        if saved:
            return saved[0], Plan.load(fold_dir(run_dir, saved[0], fold) / PLAN_FILE)
    budget = Budget(max_minutes, describe_device(device), device_memory_gb(device),
                    validation_cases)
    if not settings.fit_to_budget:
        fitted = plan
    else:
        def fit_on_main() -> dict:
            chosen = fit_plan(plan, names, budget,
                              timer or device_timer(plan, device, settings.precision),
                              reuse_measurements=False)
            return chosen.to_dict()

        fitted = Plan.from_dict(dist.broadcast(fit_on_main() if dist.is_main else None))
    if config == "auto":
        config, why = pick_configuration(fitted, budget) if settings.fit_to_budget else \
            ("3d", "3d: nnU-Net's default (plan kept as written)")
        fitted = fitted.with_changes(auto={**fitted.auto, "configuration": why})
        log.info("configuration auto: %s", why)
    if dist.is_main:
        out_dir = fold_dir(run_dir, config, fold)
        out_dir.mkdir(parents=True, exist_ok=True)
        fitted.save(out_dir / PLAN_FILE)
        for line in describe(fitted.configuration(config)):
            log.info("plan %s: %s", config, line)
    return config, fitted


def planning_memory_gb(device: str = "auto") -> float:
    """Memory the reference plan is sized for: the GPU's, else nnU-Net's 8 GB."""
    return device_memory_gb(resolve_device(device)) or DEFAULT_MEMORY_GB


def plan_for_device(plan: Plan, device: str = "auto", max_minutes: float | None = None,
                    precision: str = "auto", timer: StepTimer | None = None) -> Plan:
    """Every configuration of a freshly planned ``plan`` fitted to ``device`` and the budget
    (what ``medseg plan`` writes; ``medseg train`` fits again to its own budget)."""
    flush_denormals()
    dev = resolve_device(device)
    validation_cases = int(plan.auto.get("n_cases", DEFAULT_FOLDS)) // DEFAULT_FOLDS
    budget = Budget(max_minutes, describe_device(dev), device_memory_gb(dev), validation_cases)
    return fit_plan(plan, list(plan.configurations), budget,
                    timer or device_timer(plan, dev, precision))


def train_fold(
    run_dir: str | Path, config: str = DEFAULT_CONFIGURATION, fold: int | str = DEFAULT_FOLD,
    epochs: int | None = None,
    max_minutes: float | None = None, device: str = "auto", resume: bool = False,
    settings: TrainSettings | None = None, dist: DistContext = SINGLE_PROCESS,
    timer: StepTimer | None = None, started: float | None = None,
) -> TrainResult:
    """Train ``config`` on ``fold`` of the run folder ``run_dir``.

    ``config``: ``"3d"``, ``"2d"``, or ``"auto"`` (3D unless the budget is too short for it
    on this device: :func:`medseg.train.autoconfig.pick_configuration`). ``fold``: an int,
    ``"all"``, or ``"auto"`` (fold 0, or every case for datasets too small to keep a
    validation fold).

    Reads ``RUN/plan.json`` and the preprocessed cache, writes ``RUN/splits.json`` once and
    ``RUN/train/<config>/fold_<k>/`` (plan.json, checkpoints, metrics.csv, progress.png,
    tb/). ``max_minutes`` is a hard wall-clock budget for the whole call (fitting the plan,
    training, validation and checkpoints); ``resume`` continues from
    ``checkpoint_last.pt`` with its saved schedule. ``dist`` (from
    :func:`medseg.train.distributed.init_distributed`) trains data-parallel under torchrun.
    ``timer`` replaces the step-time measurement (tests); ``started`` (a
    ``time.perf_counter()`` value, default now) is when the budget began.
    """
    flush_denormals()
    started = time.perf_counter() if started is None else started
    check_launch(dist)
    initial_progress(epochs, max_minutes)  # reject bad lengths before any work
    run_dir = Path(run_dir)
    plan = Plan.load(run_dir / PLAN_FILE)
    cache = open_cache(run_dir)
    settings = settings or TrainSettings()
    dev = dist.device(resolve_device(device))
    if dev.type == "cpu" and settings.num_workers is None:
        settings = replace(settings, num_workers=1)
    labelled = [c for c in cache.case_ids if cache.label(c) is not None]
    if not labelled:
        raise DatasetError("the preprocessed cache has no labelled cases", cache.folder)
    if fold != (fold := resolve_fold(fold, len(labelled))):
        log.info("fold auto: %s (%d labelled cases)", fold, len(labelled))
    _, val_cases = split_cases(run_dir, labelled, fold, settings, dist)
    config, plan = fold_plan(plan, config, run_dir, fold, dev, max_minutes, len(val_cases),
                             resume, settings, dist, timer)
    out = fold_dir(run_dir, config, fold)
    session = build_session(plan, cache, labelled, run_dir, config, fold, out, dev, settings,
                            dist)
    return train_session(session, epochs, max_minutes, resume, started)

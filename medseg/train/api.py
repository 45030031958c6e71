"""``train_fold``: train one configuration on one fold of a run folder (the Python API
behind ``medseg train``)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from medseg.core.errors import ConfigError, DatasetError
from medseg.models.network import PlanLike, build_network, configuration
from medseg.preprocess import Plan, open_cache
from medseg.sampling.augment import AugmentSettings
from medseg.sampling.loader import (
    EpochSampler,
    PatchBatches,
    PatchSource,
    SamplerSettings,
    make_loader,
)
from medseg.train.distributed import SINGLE_PROCESS, DistContext, check_launch
from medseg.train.loop import Progress, Session, fit, restore
from medseg.train.loss import build_loss
from medseg.train.optim import OptimSettings, autocast_dtype, build_optimizer
from medseg.train.splits import fold_cases, load_or_create_splits

log = logging.getLogger(__name__)

DEFAULT_EPOCHS = 1000  # nnU-Net's default; on CPU prefer a time budget (max_minutes)


@dataclass(frozen=True)
class TrainSettings:
    """Training hyper-parameters that are not part of the plan."""

    iterations_per_epoch: int = 250
    validate_every: int = 5
    optim: OptimSettings = field(default_factory=OptimSettings)
    augment: AugmentSettings | None = field(default_factory=AugmentSettings)
    foreground_fraction: float = 1 / 3
    num_workers: int | None = None  # None: 1 on CPU, up to 8 on CUDA
    seed: int = 12345
    precision: str = "auto"  # "auto" | "fp32" | "bf16" | "fp16"
    n_folds: int = 5
    show_progress: bool = True


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

    @property
    def checkpoint_last(self) -> Path:
        return self.fold_dir / "checkpoint_last.pt"

    @property
    def checkpoint_best(self) -> Path:
        return self.fold_dir / "checkpoint_best.pt"


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without one is a ConfigError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r} (use auto, cpu or cuda)")
    return torch.device(device)


def fold_dir(run_dir: str | Path, config: str, fold: int | str) -> Path:
    return Path(run_dir) / "train" / config / f"fold_{fold}"


def _workers(requested: int | None, device: torch.device, ranks_per_node: int = 1) -> int:
    if requested is not None:
        return requested
    cpus = (os.cpu_count() or 1) // ranks_per_node
    return min(8, max(cpus - 1, 1)) if device.type == "cuda" else 1


def build_session(
    plan: PlanLike, source: PatchSource, case_ids: list[str], splits_dir: Path,
    config_name: str, fold: int | str, out_dir: Path, device: torch.device,
    settings: TrainSettings, dist: DistContext = SINGLE_PROCESS,
) -> Session:
    """Model, optimiser, loss and loader for one fold (splits live in ``splits_dir``);
    under torchrun (``dist``) the model is DDP-wrapped and each rank samples its own
    batches."""
    config = configuration(plan, config_name)
    splits = ([] if fold == "all"  # every case trains: no splits needed (even for 1 case)
              else dist.main_first(lambda: load_or_create_splits(
                  splits_dir, case_ids, settings.n_folds, settings.seed)))
    train_cases, val_cases = fold_cases(splits, fold, case_ids)
    torch.manual_seed(settings.seed)
    model = dist.wrap(build_network(plan, config_name).to(device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp = autocast_dtype(device, settings.precision)
    sampler_settings = SamplerSettings.from_config(config, settings.foreground_fraction)
    batches = PatchBatches(source, train_cases, sampler_settings, settings.augment,
                           dist.sampler_seed(settings.seed))
    batches.open_all()  # loader workers fork with the cases already open
    sampler = EpochSampler(settings.iterations_per_epoch)
    loader = make_loader(batches, sampler,
                         _workers(settings.num_workers, device, dist.local_world_size),
                         pin_memory=device.type == "cuda")
    labels = plan.to_dict()["labels"]
    return Session(
        plan=plan, config_name=config_name, config=config, fold=fold, model=model,
        optimizer=build_optimizer(model.parameters(), settings.optim),
        scaler=torch.amp.GradScaler(device.type, enabled=amp == torch.float16),
        loss_fn=build_loss(bool(config.get("deep_supervision", False))),
        loader=loader, sampler=sampler, source=source, val_cases=val_cases,
        class_names=[labels[k] for k in sorted(labels, key=int) if int(k) != 0],
        device=device, amp_dtype=amp, initial_lr=settings.optim.initial_lr(),
        grad_clip=settings.optim.grad_clip, validate_every=settings.validate_every,
        fold_dir=out_dir, show_progress=settings.show_progress and dist.is_main, dist=dist,
    )


def initial_progress(epochs: int | None, max_minutes: float | None) -> Progress:
    if epochs is not None and max_minutes is not None:
        raise ConfigError("give either epochs or max_minutes, not both")
    if epochs is not None and epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    if max_minutes is not None:
        if max_minutes <= 0:
            raise ConfigError(f"max_minutes must be positive, got {max_minutes}")
        return Progress(total_epochs=1000, budget_s=60.0 * max_minutes)
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
    progress = fit(session, progress)
    final = next((r for r in reversed(progress.rows) if r["dice_mean"] == r["dice_mean"]), None)
    dice = {n: final[f"dice_{n}"] for n in session.class_names} if final else {}
    log.info("trained %s fold %s: %d epochs in %.0fs, best Dice %.4f", session.config_name,
             session.fold, progress.epoch, progress.elapsed_s, progress.best_metric)
    return TrainResult(session.fold_dir, session.config_name, session.fold, progress.epoch,
                       progress.best_metric, dice, progress.elapsed_s)


def train_fold(
    run_dir: str | Path, config: str = "3d", fold: int | str = 0, epochs: int | None = None,
    max_minutes: float | None = None, device: str = "auto", resume: bool = False,
    settings: TrainSettings | None = None, dist: DistContext = SINGLE_PROCESS,
) -> TrainResult:
    """Train ``config`` on ``fold`` (an int or ``"all"``) of the run folder ``run_dir``.

    Reads ``RUN/plan.json`` and the preprocessed cache, writes ``RUN/splits.json`` once and
    ``RUN/train/<config>/fold_<k>/`` (checkpoints, metrics.csv, progress.png, tb/).
    ``max_minutes`` fits the schedule to a wall-clock budget; ``resume`` continues from
    ``checkpoint_last.pt`` with its saved schedule. ``dist`` (from
    :func:`medseg.train.distributed.init_distributed`) trains data-parallel under torchrun.
    """
    started = time.perf_counter()
    check_launch(dist)
    run_dir = Path(run_dir)
    plan = Plan.load(run_dir / "plan.json")
    cache = open_cache(run_dir)
    settings = settings or TrainSettings()
    dev = dist.device(resolve_device(device))
    if dev.type == "cpu" and settings.num_workers is None:
        settings = replace(settings, num_workers=1)
    labelled = [c for c in cache.case_ids if cache.label(c) is not None]
    if not labelled:
        raise DatasetError("the preprocessed cache has no labelled cases", cache.folder)
    session = build_session(plan, cache, labelled, run_dir, config, fold,
                            fold_dir(run_dir, config, fold), dev, settings, dist)
    return train_session(session, epochs, max_minutes, resume, started)

"""Training: fitting the plan to the device and budget, loss, optimiser and poly LR,
splits, time budgets, epoch loop, validation."""

from medseg.train.api import TrainResult, resolve_device, train_fold
from medseg.train.autoplan import Budget, fit_plan
from medseg.train.loss import build_loss
from medseg.train.settings import DEFAULT_SEED, OptimSettings, TrainSettings
from medseg.train.splits import fold_cases, load_or_create_splits, make_splits
from medseg.train.validation import ValidationResult, dice_per_class, validate

__all__ = [
    "DEFAULT_SEED",
    "Budget",
    "OptimSettings",
    "TrainResult",
    "TrainSettings",
    "ValidationResult",
    "build_loss",
    "dice_per_class",
    "fit_plan",
    "fold_cases",
    "load_or_create_splits",
    "make_splits",
    "resolve_device",
    "train_fold",
    "validate",
]

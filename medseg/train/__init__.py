"""Training: loss, optimiser and poly LR, splits, time budgets, epoch loop, validation."""

from medseg.train.api import TrainResult, TrainSettings, resolve_device, train_fold
from medseg.train.loss import build_loss
from medseg.train.optim import OptimSettings
from medseg.train.splits import fold_cases, load_or_create_splits, make_splits
from medseg.train.validation import ValidationResult, dice_per_class, validate

__all__ = [
    "OptimSettings",
    "TrainResult",
    "TrainSettings",
    "ValidationResult",
    "build_loss",
    "dice_per_class",
    "fold_cases",
    "load_or_create_splits",
    "make_splits",
    "resolve_device",
    "train_fold",
    "validate",
]

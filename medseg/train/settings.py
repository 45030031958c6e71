"""The one source of training defaults.

What the plan chooses (network, iterations per epoch, validation frequency, optimiser,
learning rate, rotation; ``medseg.preprocess.plan.TrainingPlan``) is not repeated here:
a ``None`` below means "the plan's choice", and a value overrides it. The command line
(``medseg train``), pipeline files (``train:`` section) and the Python API all build a
:class:`TrainSettings`, so they share these defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medseg.sampling.augment import AugmentSettings

#: Seed of splits, patch sampling, augmentation and network initialisation.
DEFAULT_SEED = 12345
DEFAULT_FOLDS = 5
#: nnU-Net's epoch count, used when neither epochs nor a time budget is given.
DEFAULT_EPOCHS = 1000
#: "auto": fold 0 of the cross-validation splits, or every case ("all") when there are
#: fewer than MIN_CASES_TO_VALIDATE labelled cases (a validation fold would take too much
#: of the little training data, and one or two cases select checkpoints no better than
#: the end of the schedule).
DEFAULT_FOLD = "auto"
#: "auto": the 3D configuration, or 2D under a time budget too short for 3D on this device
#: (:func:`medseg.train.autoconfig.pick_configuration`); "3d" and "2d" force one.
DEFAULT_CONFIGURATION = "auto"
MIN_CASES_TO_VALIDATE = 10


def resolve_fold(fold: int | str, n_cases: int) -> int | str:
    """The fold ``"auto"`` stands for with ``n_cases`` labelled cases (others unchanged)."""
    if fold != "auto":
        return fold
    return 0 if n_cases >= MIN_CASES_TO_VALIDATE else "all"


@dataclass(frozen=True)
class OptimSettings:
    """Optimiser hyper-parameters; ``name``/``lr`` None: the plan's choice."""

    name: str | None = None  # "sgd" | "adamw"
    lr: float | None = None
    weight_decay: float | None = None  # None: 3e-5 for SGD, 1e-4 for AdamW
    momentum: float = 0.99
    grad_clip: float = 12.0

    def decay(self, name: str) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 3e-5 if name == "sgd" else 1e-4


@dataclass(frozen=True)
class TrainSettings:
    """Training settings that are not in the plan, and overrides of the plan's choices."""

    iterations_per_epoch: int | None = None
    validate_every: int | None = None
    optim: OptimSettings = field(default_factory=OptimSettings)
    # True: the plan's augmentation (nnU-Net's, rotation as planned); False: none
    augment: bool | AugmentSettings = True
    foreground_fraction: float = 1 / 3
    num_workers: int | None = None  # None: 1 on CPU, up to 8 on CUDA
    seed: int = DEFAULT_SEED
    precision: str = "auto"  # medseg.models.runtime.PRECISIONS
    n_folds: int = DEFAULT_FOLDS
    fit_to_budget: bool = True  # fit the plan to the device and budget at the start
    show_progress: bool = True

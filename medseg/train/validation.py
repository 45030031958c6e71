"""Validation: sliding-window prediction on the fold's validation cases, Dice per class."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.core.scoring import dice
from medseg.inference.postprocess import ComponentEvidence, keep_largest_component
from medseg.inference.sliding_window import predict_probabilities
from medseg.sampling.loader import PatchSource


def dice_per_class(pred: np.ndarray, truth: np.ndarray, n_classes: int,
                   partial_labels: bool = False) -> list[float]:
    """Dice of classes ``1..n_classes-1`` between two label maps, with the conventions of
    :mod:`medseg.core.scoring` (as evaluation): 1 when a class is absent from both, NaN
    with ``partial_labels`` when it is absent from the reference (not annotated there)."""
    return [dice(pred == k, truth == k, partial_labels) for k in range(1, n_classes)]


def class_means(case_dice: Mapping[str, Sequence[float]], n_classes: int) -> list[float]:
    """Mean Dice of each foreground class over the cases that scored it (NaN: none)."""
    per_class = np.array(list(case_dice.values()), dtype=np.float64).reshape(-1, n_classes - 1)
    with np.errstate(all="ignore"):
        return [float(np.nanmean(col)) if np.isfinite(col).any() else float("nan")
                for col in per_class.T]


@dataclass(frozen=True)
class ValidationResult:
    """Mean Dice per foreground class over the validation cases (and per case), and per
    case after keeping each class's largest connected component."""

    class_dice: list[float]
    case_dice: dict[str, list[float]]
    skipped: tuple[str, ...] = ()  # cases left out to stay within a time budget
    component_case_dice: dict[str, list[float]] = field(default_factory=dict)

    @property
    def mean_dice(self) -> float:
        valid = [d for d in self.class_dice if not np.isnan(d)]
        return float(np.mean(valid)) if valid else float("nan")

    def component_evidence(self) -> ComponentEvidence:
        """Whether keeping the largest component helps each class, on these cases."""
        n_classes = len(self.class_dice) + 1
        scored = np.isfinite(np.array(list(self.case_dice.values()), dtype=np.float64)
                             .reshape(-1, n_classes - 1)).sum(axis=0)
        return ComponentEvidence(
            tuple(self.class_dice), tuple(class_means(self.component_case_dice, n_classes)),
            tuple(int(n) for n in scored))


def window_batch(config: Mapping[str, Any]) -> int:
    """Windows per forward pass in validation: 2 in 3D, the training batch of slices in 2D."""
    return int(config.get("batch_size", 2)) if len(config["patch_size"]) == 2 else 2


@torch.no_grad()
def validate(
    model: nn.Module, source: PatchSource, cases: Sequence[str], config: Mapping[str, Any],
    n_classes: int, device: torch.device, *, partial_labels: bool = False,
    deadline: float | None = None, clock: Callable[[], float] = time.perf_counter,
) -> ValidationResult:
    """Predict each case with sliding windows (no mirroring) and score it against its label,
    as predicted and with each class reduced to its largest connected component.

    With a ``deadline`` (a ``clock()`` value), a case is only started when the slowest case
    so far would still end before it; the others are listed in ``skipped``.
    """
    was_training = model.training
    model.eval()
    slice_axis = config.get("slice_axis") if len(config["patch_size"]) == 2 else None
    case_dice: dict[str, list[float]] = {}
    component_dice: dict[str, list[float]] = {}
    slowest = 0.0
    try:
        for case in cases:
            start = clock()
            if deadline is not None and start + slowest > deadline:
                break
            probs = predict_probabilities(
                model, np.array(source.image(case, mmap=True)), config["patch_size"],
                batch_size=window_batch(config), device=device, slice_axis=slice_axis,
            )
            truth = np.asarray(source.label(case, mmap=True))[0]
            pred = probs.argmax(0)
            del probs
            case_dice[case] = dice_per_class(pred, truth, n_classes, partial_labels)
            component_dice[case] = dice_per_class(
                keep_largest_component(pred, range(1, n_classes)), truth, n_classes,
                partial_labels)
            slowest = max(slowest, clock() - start)
    finally:
        model.train(was_training)
    return ValidationResult(class_means(case_dice, n_classes), case_dice,
                            tuple(c for c in cases if c not in case_dice), component_dice)

"""Validation: sliding-window prediction on the fold's validation cases, Dice per class."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.inference.sliding_window import predict_probabilities
from medseg.sampling.loader import PatchSource


def dice_per_class(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> list[float]:
    """Dice of classes ``1..n_classes-1`` between two label maps; NaN when a class is absent
    from both."""
    scores = []
    for k in range(1, n_classes):
        p, t = pred == k, truth == k
        denom = int(p.sum()) + int(t.sum())
        scores.append(float("nan") if denom == 0 else 2.0 * int((p & t).sum()) / denom)
    return scores


@dataclass(frozen=True)
class ValidationResult:
    """Mean Dice per foreground class over the validation cases (and per case)."""

    class_dice: list[float]
    case_dice: dict[str, list[float]]

    @property
    def mean_dice(self) -> float:
        valid = [d for d in self.class_dice if not np.isnan(d)]
        return float(np.mean(valid)) if valid else float("nan")


@torch.no_grad()
def validate(
    model: nn.Module, source: PatchSource, cases: Sequence[str], config: Mapping[str, Any],
    n_classes: int, device: torch.device,
) -> ValidationResult:
    """Predict each case with sliding windows (no mirroring) and score it against its label."""
    was_training = model.training
    model.eval()
    slice_axis = config.get("slice_axis") if len(config["patch_size"]) == 2 else None
    case_dice = {}
    try:
        for case in cases:
            probs = predict_probabilities(
                model, np.array(source.image(case, mmap=True)), config["patch_size"],
                batch_size=int(config.get("batch_size", 2)) if slice_axis is not None else 2,
                device=device, slice_axis=slice_axis,
            )
            truth = np.asarray(source.label(case, mmap=True))[0]
            case_dice[case] = dice_per_class(probs.argmax(0), truth, n_classes)
    finally:
        model.train(was_training)
    per_class = np.array(list(case_dice.values()), dtype=np.float64).reshape(-1, n_classes - 1)
    with np.errstate(all="ignore"):
        class_dice = [float(np.nanmean(col)) if np.isfinite(col).any() else float("nan")
                      for col in per_class.T]
    return ValidationResult(class_dice, case_dice)

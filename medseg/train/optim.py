"""Optimisers (SGD + Nesterov, AdamW) and the poly learning-rate schedule."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from medseg.train.settings import OptimSettings

POLY_EXPONENT = 0.9


def build_optimizer(params: Iterable[torch.nn.Parameter], name: str, lr: float,
                    settings: OptimSettings | None = None) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (nnU-Net's default) or AdamW."""
    settings = settings or OptimSettings()
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=settings.momentum, nesterov=True,
                               weight_decay=settings.decay(name))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=settings.decay(name))
    raise ValueError(f"unknown optimizer {name!r} (use 'sgd' or 'adamw')")


def poly_lr(initial_lr: float, progress: float, exponent: float = POLY_EXPONENT) -> float:
    """``initial_lr * (1 - progress) ** exponent`` for progress in [0, 1]."""
    return initial_lr * (1.0 - min(max(progress, 0.0), 1.0)) ** exponent


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr

"""Optimisers (SGD + Nesterov, AdamW), the poly learning-rate schedule and precision."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

POLY_EXPONENT = 0.9


@dataclass(frozen=True)
class OptimSettings:
    """Optimiser choice and hyper-parameters (``lr=None``: 1e-2 for SGD, 1e-3 for AdamW)."""

    name: str = "sgd"  # "sgd" | "adamw"
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.99
    grad_clip: float = 12.0

    def initial_lr(self) -> float:
        return self.lr if self.lr is not None else (1e-2 if self.name == "sgd" else 1e-3)

    def decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 3e-5 if self.name == "sgd" else 1e-4


def build_optimizer(params: Iterable[torch.nn.Parameter], settings: OptimSettings
                    ) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (nnU-Net's default) or AdamW."""
    if settings.name == "sgd":
        return torch.optim.SGD(params, lr=settings.initial_lr(), momentum=settings.momentum,
                               nesterov=True, weight_decay=settings.decay())
    if settings.name == "adamw":
        return torch.optim.AdamW(params, lr=settings.initial_lr(), weight_decay=settings.decay())
    raise ValueError(f"unknown optimizer {settings.name!r} (use 'sgd' or 'adamw')")


def poly_lr(initial_lr: float, progress: float, exponent: float = POLY_EXPONENT) -> float:
    """``initial_lr * (1 - progress) ** exponent`` for progress in [0, 1]."""
    return initial_lr * (1.0 - min(max(progress, 0.0), 1.0)) ** exponent


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """Mixed-precision dtype: float16 on CUDA, bfloat16 on CPUs with native bf16, else None.

    ``precision``: "auto", "fp32" (never autocast), "bf16" or "fp16".
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        if device.type == "cuda" and not cuda_supports_bfloat16(device):
            # torch.autocast would warn and silently run float32 instead
            log.warning("bf16 requested but %s has no bfloat16 support (pre-Ampere): "
                        "using float16 with gradient scaling", device)
            return torch.float16
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if _cpu_has_native_bf16() else None


def cuda_supports_bfloat16(device: torch.device) -> bool:
    """True when ``device`` computes bfloat16 natively (compute capability 8.0, Ampere, on)."""
    try:
        return torch.cuda.get_device_capability(device)[0] >= 8
    except (AssertionError, RuntimeError):  # no CUDA here
        return False


def _cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False

"""Dice + cross-entropy (background excluded from Dice) with deep-supervision weighting."""

from __future__ import annotations

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss
from torch import nn


def build_loss(deep_supervision: bool) -> nn.Module:
    """MONAI DiceCELoss (batch Dice over foreground classes + CE), wrapped for deep
    supervision with exponentially decaying weights (1, 1/2, 1/4, ...)."""
    loss = DiceCELoss(
        include_background=False, to_onehot_y=True, softmax=True, batch=True,
        smooth_nr=1e-5, smooth_dr=1e-5,
    )
    return DeepSupervisionLoss(loss, weight_mode="exp") if deep_supervision else loss


def compute_loss(loss_fn: nn.Module, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Loss of a network output against an int label batch (B, 1, ...).

    A deep-supervised DynUNet output ``(B, 1 + heads, K, ...)`` is split into its heads.
    """
    if isinstance(loss_fn, DeepSupervisionLoss):
        return loss_fn([o.float() for o in output.unbind(1)], target)
    return loss_fn(output.float(), target)

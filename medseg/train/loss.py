"""Dice + cross-entropy with deep-supervision weighting, for fully or partially annotated
cases.

With every class annotated in every case this is MONAI's ``DiceCELoss(include_background=
False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=smooth_dr=1e-5)`` wrapped in
``DeepSupervisionLoss(weight_mode="exp")`` (tests compare the two). MONAI has no loss for
partial annotation, hence this module: when a case's reference lacks a class, that class
is *not annotated* there (an organ that was not contoured is still in the body), so

- its background voxels mean "background or one of the unannotated classes": the
  cross-entropy there uses the merged probability of those classes (the marginal loss of
  Shi et al., MedIA 2021), so predicting an unannotated organ costs nothing;
- the Dice term of a class only sums over the batch samples whose case annotates it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SMOOTH = 1e-5
#: Deep-supervision head weights: 1, 1/2, 1/4, ... (not below 1/16), as MONAI's "exp" mode.
MIN_HEAD_WEIGHT = 0.0625


class DiceCELoss(nn.Module):
    """Batch soft Dice over the foreground classes + cross-entropy, both weighted 1."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                annotated: torch.Tensor | None = None) -> torch.Tensor:
        """``logits`` (B, K, ...), integer ``target`` (B, 1, ...), ``annotated`` (B, K) bool
        (None: every class annotated in every sample)."""
        logits = logits.float()
        labels = target[:, 0].long()
        if annotated is None:
            annotated = torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
        annotated = annotated.to(logits.device, torch.bool).clone()
        annotated[:, 0] = True
        return dice_loss(logits, labels, annotated) + cross_entropy(logits, labels, annotated)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, annotated: torch.Tensor
                  ) -> torch.Tensor:
    """Mean voxel cross-entropy; a background voxel scores the merged probability of
    background and the classes its sample does not annotate."""
    log_norm = torch.logsumexp(logits, dim=1)
    log_true = logits.gather(1, labels.unsqueeze(1)).squeeze(1)
    if not bool(annotated.all()):
        spatial = [1] * (logits.ndim - 2)
        merged = (~annotated).clone()
        merged[:, 0] = True
        log_background = logits.masked_fill(~merged.view(*merged.shape, *spatial),
                                            float("-inf")).logsumexp(dim=1)
        log_true = torch.where(labels == 0, log_background, log_true)
    return (log_norm - log_true).mean()


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, annotated: torch.Tensor
              ) -> torch.Tensor:
    """1 - soft Dice per foreground class over the batch (only the samples annotating the
    class), averaged over the classes annotated somewhere in the batch."""
    probs = torch.softmax(logits, dim=1)[:, 1:]
    n_classes = logits.shape[1]
    onehot = F.one_hot(labels, n_classes).movedim(-1, 1)[:, 1:].to(probs.dtype)
    dims = tuple(range(2, logits.ndim))
    weight = annotated[:, 1:].to(probs.dtype)  # (B, K-1)
    intersection = ((probs * onehot).sum(dims) * weight).sum(0)
    denominator = ((probs.sum(dims) + onehot.sum(dims)) * weight).sum(0)
    per_class = 1.0 - (2.0 * intersection + SMOOTH) / (denominator + SMOOTH)
    present = annotated[:, 1:].any(0)
    if not bool(present.any()):
        return logits.sum() * 0.0
    return per_class[present].mean()


class DeepSupervision(nn.Module):
    """A loss applied to every head of a deep-supervised output, heads weighted 1, 1/2, ...
    and the sum divided by nothing (as MONAI's ``DeepSupervisionLoss``)."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, outputs: list[torch.Tensor], target: torch.Tensor,
                annotated: torch.Tensor | None = None) -> torch.Tensor:
        total = outputs[0].new_zeros((), dtype=torch.float32)
        for level, output in enumerate(outputs):
            weight = max(0.5**level, MIN_HEAD_WEIGHT)
            total = total + weight * self.loss(output, target, annotated)
        return total


def build_loss(deep_supervision: bool) -> nn.Module:
    """Dice + CE, wrapped for deep supervision when the network has extra heads."""
    loss = DiceCELoss()
    return DeepSupervision(loss) if deep_supervision else loss


def compute_loss(loss_fn: nn.Module, output: torch.Tensor, target: torch.Tensor,
                 annotated: torch.Tensor | None = None) -> torch.Tensor:
    """Loss of a network output against an int label batch (B, 1, ...); ``annotated``
    (B, K) says which classes each sample's case annotates (None: all).

    A deep-supervised DynUNet output ``(B, 1 + heads, K, ...)`` is split into its heads.
    """
    if isinstance(loss_fn, DeepSupervision):
        return loss_fn(list(output.unbind(1)), target, annotated)
    return loss_fn(output, target, annotated)

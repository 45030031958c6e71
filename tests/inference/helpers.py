"""Tiny plans, deterministic networks and run folders for inference tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from medseg.models import build_network, save_checkpoint
from medseg.preprocess.plan import Plan

NAMES = {0: "background", 1: "ball"}


def tiny_plan(
    spacing: Sequence[float] = (1.0, 1.0, 1.0), labels: dict[int, str] | None = None,
    crop: bool = True,
) -> Plan:
    """A one-channel plan with a small 3D and 2D DynUNet configuration."""
    layer = {"kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
             "filters": [4, 8, 8], "deep_supervision": False}
    return Plan.from_dict({
        "format": "medseg-plan-v1", "dataset_name": "Tiny",
        "labels": {str(k): v for k, v in (labels or NAMES).items()}, "channels": {"0": "MRI"},
        "target_spacing": list(spacing), "normalization": [{"scheme": "zscore_nonzero"}],
        "image_interpolation": "linear", "label_interpolation": "nearest",
        "crop_to_nonzero": crop,
        "configurations": {
            "3d": {"patch_size": [8, 8, 8], "batch_size": 2, "spacing": list(spacing), **layer},
            "2d": {"patch_size": [8, 8], "batch_size": 4, "spacing": list(spacing),
                   "kernel_sizes": [[3, 3]] * 3, "strides": [[1, 1], [2, 2], [2, 2]],
                   "filters": [4, 8, 8], "deep_supervision": False, "slice_axis": 0},
        },
    })


def threshold_network(dims: int = 3, n_classes: int = 2) -> torch.nn.Module:
    """1x1 convolution: class 1 wins where the normalised intensity is above 1."""
    conv = (torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d)(1, n_classes, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight.view(n_classes)[1] = 1.0
        conv.weight.view(n_classes)[0] = -1.0
        conv.bias[1], conv.bias[0] = -1.0, 1.0
    return conv.eval()


def write_run(run: Path, plan: Plan, folds: Sequence[int], config: str = "3d",
              seed: int = 0, postprocessing: Sequence[dict[str, Any]] | None = None
              ) -> list[Path]:
    """A run folder with randomly initialised DynUNet checkpoints, one per fold (with the
    fold's ``postprocessing`` validation record when given)."""
    paths = []
    for i, fold in enumerate(folds):
        torch.manual_seed(seed + fold)
        net = build_network(plan, config)
        path = run / "train" / config / f"fold_{fold}" / "checkpoint_best.pt"
        save_checkpoint(path, {"plan": plan.to_dict(), "config": config, "fold": fold,
                               "model": net.state_dict(), "epoch": 1, "best_metric": 0.0,
                               "postprocessing": postprocessing[i] if postprocessing else None})
        paths.append(path)
    return paths

"""Checkpoints: a dict of plain types and tensors, saved atomically, loaded weights-only.

Layout (docs/architecture.md): ``{"format", "plan", "config", "fold", "model",
"optimizer", "scheduler", "scaler", "epoch", "rng", "best_metric", ...}``.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medseg.core.atomic import atomic_path
from medseg.core.errors import CheckpointError
from medseg.models.network import PlanLike

CHECKPOINT_FORMAT = "medseg-checkpoint-v1"


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> None:
    """Atomically write a checkpoint (``format`` is added)."""
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **payload}, tmp)


def _plan_mismatch(saved: Mapping[str, Any], plan: Mapping[str, Any], config: str) -> str | None:
    """Why a checkpoint's plan cannot serve ``plan``/``config`` (None when it can)."""
    for key in ("channels", "labels"):
        if saved.get(key) != plan.get(key):
            return f"{key} differ (checkpoint {saved.get(key)}, plan {plan.get(key)})"
    ours = plan.get("configurations", {}).get(config)
    theirs = saved.get("configurations", {}).get(config)
    if theirs is None:
        return f"checkpoint has no configuration {config!r}"
    for key in ("patch_size", "kernel_sizes", "strides", "filters", "deep_supervision"):
        if ours is not None and ours.get(key) != theirs.get(key):
            return f"configuration {config!r} {key} differ ({theirs.get(key)} vs {ours.get(key)})"
    return None


def load_checkpoint(
    path: str | Path, plan: PlanLike | None = None, config: str | None = None
) -> dict[str, Any]:
    """Load a checkpoint (``weights_only=True``), checking it matches ``plan``/``config``.

    Raises CheckpointError when the file is missing, unreadable, not a medseg checkpoint
    or made for another plan (channels, labels or network layout differ).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found", path)
    ckpt = load_weights_only(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"not a {CHECKPOINT_FORMAT} file", path)
    if config is not None and ckpt.get("config") != config:
        raise CheckpointError(f"checkpoint is for configuration {ckpt.get('config')!r}, "
                              f"not {config!r}", path)
    if plan is not None:
        problem = _plan_mismatch(ckpt.get("plan", {}), plan.to_dict(), config or ckpt["config"])
        if problem:
            raise CheckpointError(f"checkpoint does not match the plan: {problem}", path)
    return ckpt


def load_weights_only(path: Path, safe_globals: Sequence[Any] = ()) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU (plus the named ``safe_globals``),
    failures as one-line CheckpointErrors naming the file."""
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's message is many lines of advice
        raise CheckpointError("cannot read checkpoint: not a file of tensors and plain values "
                              "(refused by torch.load(weights_only=True))", path) from exc
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"cannot read checkpoint: {type(exc).__name__}: {first}",
                              path) from exc


def load_weights(model: nn.Module, ckpt: Mapping[str, Any], path: str | Path = "") -> None:
    """Load a checkpoint's model weights, as CheckpointError if the layers do not match."""
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"model weights do not fit the network: {exc}", path or None
                              ) from exc

"""nnU-Net v2 networks: built from a model folder's ``plans.json`` with nnU-Net's own
architecture package (``dynamic-network-architectures``, the ``medseg[nnunet]`` extra,
imported only here, when used) and loaded from ``fold_k/checkpoint_final.pth`` with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from medseg.core.errors import CheckpointError, ConfigError
from medseg.models.checkpoint import load_weights_only
from medseg.preprocess.nnunet_plans import NnunetPlan

#: Modules an architecture entry of plans.json may name (nothing else is imported).
ALLOWED_MODULES = ("torch.nn", "dynamic_network_architectures")
CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_best.pth")
#: Plain non-tensor types found in nnU-Net checkpoints (its training log holds numpy scalars).
_SAFE_GLOBALS: list[Any] = [np.dtype, np.float64, np.float32, np.int64, np.bool_]


def build_nnunet_network(plan: NnunetPlan) -> nn.Module:
    """The plan's network (no deep supervision), as nnU-Net builds it for inference."""
    arch = plan.architecture
    try:
        cls = locate(str(arch["network_class_name"]))
        kwargs = dict(arch["arch_kwargs"])
        for key in arch.get("_kw_requires_import", ()):
            if kwargs.get(key) is not None:
                kwargs[key] = locate(str(kwargs[key]))
    except KeyError as exc:
        raise ConfigError(f"plans.json architecture lacks {exc} (plans from nnU-Net < 2.4 "
                          "are not supported)", plan.folder / "plans.json") from exc
    try:
        return cls(input_channels=len(plan.channels), num_classes=plan.n_outputs,
                   deep_supervision=False, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"cannot build {arch['network_class_name']}: {exc}",
                          plan.folder / "plans.json") from exc


def locate(dotted: str) -> Any:
    """The class named ``package.module.Name`` (only torch.nn and the architecture package)."""
    if not dotted.startswith(ALLOWED_MODULES):
        raise ConfigError(f"plans.json names {dotted!r}; only {', '.join(ALLOWED_MODULES)} "
                          "classes are loaded")
    module_name, _, name = dotted.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("dynamic_network_architectures"):
            raise ConfigError("nnU-Net models need the architecture package: "
                              "pip install 'medseg[nnunet]'") from exc
        raise ConfigError(f"cannot import {module_name}: {exc}") from exc
    try:
        return getattr(module, name)
    except AttributeError as exc:
        raise ConfigError(f"{module_name} has no {name}") from exc


def fold_checkpoints(folder: Path, folds: Sequence[str | int] | None) -> list[Path]:
    """``fold_<k>/checkpoint_final.pth`` (else ``checkpoint_best.pth``) of the named folds, or
    of every fold folder (``fold_all`` included) when ``folds`` is None."""
    if folds:
        dirs = [folder / f"fold_{f}" for f in folds]
        absent = [d.name for d in dirs if not d.is_dir()]
        if absent:
            raise ConfigError(f"fold folder(s) {', '.join(absent)} not found", folder)
    else:
        dirs = sorted(d for d in folder.glob("fold_*") if d.is_dir())
    found = [next((d / n for n in CHECKPOINT_NAMES if (d / n).is_file()), None) for d in dirs]
    missing = [d.name for d, c in zip(dirs, found, strict=True) if c is None]
    if (folds and missing) or not any(found):
        raise CheckpointError(f"no checkpoint_final.pth in {', '.join(missing) or 'fold_*'}",
                              folder)
    return [c for c in found if c is not None]


def load_nnunet_checkpoint(path: Path) -> dict[str, Any]:
    """An nnU-Net checkpoint read with ``weights_only=True`` (numpy scalars allowed)."""
    if not path.is_file():
        raise CheckpointError("checkpoint not found", path)
    ckpt = load_weights_only(path, _SAFE_GLOBALS + _numpy_scalar_reconstructors())
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt:
        raise CheckpointError("not an nnU-Net checkpoint (no network_weights)", path)
    return ckpt


def load_nnunet_weights(network: nn.Module, ckpt: dict[str, Any], path: Path) -> None:
    weights = {k.removeprefix("_orig_mod.").removeprefix("module."): v
               for k, v in ckpt["network_weights"].items()}
    try:
        network.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"weights do not fit the planned network: "
                              f"{str(exc).splitlines()[0]}", path) from exc


def _numpy_scalar_reconstructors() -> list[Any]:
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    dtypes = [getattr(np.dtypes, n) for n in ("Float64DType", "Float32DType", "Int64DType")
              if hasattr(np, "dtypes") and hasattr(np.dtypes, n)]
    return [scalar, *dtypes]

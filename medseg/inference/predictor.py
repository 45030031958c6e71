"""A trained model ready to predict: plan + one network per fold, ensembled by averaging
probabilities; label maps come back on the input's own grid (shape and affine).

``Predictor.load`` accepts a run folder (``RUN/train/<config>/fold_<k>/``), a
configuration folder, a fold folder, a single checkpoint file or an nnU-Net v2 model folder
(``<Trainer>__<Plans>__<config>/``, see :mod:`medseg.inference.nnunet`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.core import Volume
from medseg.core.errors import CheckpointError, ConfigError
from medseg.inference.cpu_kernels import use_onednn_convolutions
from medseg.inference.oom import Attempt, attempts, host_copy, run_with_retries
from medseg.inference.postprocess import keep_largest_component
from medseg.inference.sliding_window import choose_accumulator, predict_probabilities
from medseg.models import build_network, load_checkpoint, load_weights
from medseg.models.runtime import autocast_dtype, resolve_device
from medseg.preprocess.case import PreprocessedCase, preprocess_case
from medseg.preprocess.invert import invert_labels, invert_probabilities
from medseg.preprocess.nnunet_plans import is_nnunet_model_folder
from medseg.preprocess.plan import Plan

#: Checkpoint files looked for in a fold folder, in order of preference.
CHECKPOINT_NAMES = ("checkpoint_best.pt", "checkpoint_last.pt")
DEFAULT_CONFIG_ORDER = ("3d", "2d")


@dataclass(frozen=True)
class InferenceSettings:
    """How windows are predicted: overlap, mirroring (TTA), batch, mixed precision, LCC."""

    overlap: float = 0.5
    tta: bool | None = None  # test-time mirroring; None: the plan's choice (mirror_tta)
    batch_size: int | None = None  # windows per forward; None: 2 (3D) or the plan's (2D)
    amp: bool = True
    largest_component: bool = False


@dataclass(frozen=True)
class Prediction:
    """A label map on the source grid and, if asked for, the class probabilities there."""

    labels: Volume
    probabilities: np.ndarray | None = None  # float32/float16 (K, I, J, K), source grid


class Predictor:
    """Plan, configuration and the fold networks (moved to ``device``, eval mode, and to
    bfloat16 on CPUs that have it unless ``settings.amp`` is off; the predictor owns them)."""

    def __init__(
        self,
        plan: Plan,
        config: str,
        networks: Sequence[nn.Module],
        device: str | torch.device = "cpu",
        settings: InferenceSettings | None = None,
        checkpoints: Sequence[Path] = (),
    ) -> None:
        if not networks:
            raise CheckpointError("a predictor needs at least one network")
        self.plan = plan
        self.config = config
        self.device = resolve_device(device)
        self.settings = settings or InferenceSettings()
        self.networks = [prepare_network(net, self.device, self.settings.amp)
                         for net in networks]
        self.checkpoints = [Path(p) for p in checkpoints]
        self._host_networks: dict[int, nn.Module] = {}  # CPU copies, made on a GPU OOM

    @classmethod
    def load(
        cls,
        model: str | Path,
        folds: Sequence[str | int] | None = None,
        config: str | None = None,
        device: str | torch.device = "cpu",
        settings: InferenceSettings | None = None,
    ) -> Predictor:
        """Load every trained fold of a run folder (or the named ``folds``), or one checkpoint;
        an nnU-Net v2 model folder gives a :class:`~medseg.inference.nnunet.NnunetPredictor`."""
        if is_nnunet_model_folder(model):
            from medseg.inference.nnunet import NnunetPredictor
            return NnunetPredictor.load_folder(model, folds, config, device, settings)
        paths = find_checkpoints(Path(model), folds, config)
        first = load_checkpoint(paths[0])
        plan = Plan.from_dict(first["plan"])
        config_name = str(first["config"])
        networks = []
        for path in paths:
            ckpt = first if path == paths[0] else load_checkpoint(path, plan, config_name)
            net = build_network(plan, config_name)
            load_weights(net, ckpt, path)
            networks.append(net)
        return cls(plan, config_name, networks, device, settings, paths)

    @property
    def mirroring(self) -> bool:
        """Whether windows are also predicted mirrored: as asked, else as planned."""
        if self.settings.tta is not None:
            return self.settings.tta
        return self.plan.configuration(self.config).training.mirror_tta

    @property
    def label_names(self) -> dict[int, str]:
        return dict(self.plan.labels)

    def describe(self) -> str:
        """One line: configuration, folds and device."""
        folds = ", ".join(p.parent.name for p in self.checkpoints) or "in-memory"
        return (f"{self.plan.dataset_name} {self.config} ({len(self.networks)} network(s): "
                f"{folds}) on {self.device}, mirroring {'on' if self.mirroring else 'off'}")

    def preprocess(self, volume: Volume) -> PreprocessedCase:
        """Apply the plan's preprocessing to an input image."""
        return preprocess_case(volume, None, self.plan)

    def window_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`predict_probabilities` for this model and settings."""
        cfg = self.plan.configuration(self.config)
        return {
            "patch_size": cfg.patch_size, "overlap": self.settings.overlap,
            "batch_size": self.settings.batch_size or (2 if cfg.slice_axis is None
                                                       else cfg.batch_size),
            "device": self.device, "mirror_axes": (0, 1, 2) if self.mirroring else (),
            "amp": self.settings.amp, "slice_axis": cfg.slice_axis,
        }

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """Fold-averaged class probabilities ``(K, X, Y, Z)`` on the preprocessed grid."""
        options = self.window_options()
        total: np.ndarray | None = None
        for index in range(len(self.networks)):

            def run(attempt: Attempt, index: int = index) -> np.ndarray:
                host = torch.device("cpu")
                return predict_probabilities(
                    self._network_on(index, attempt.device), image,
                    **{**options, "batch_size": attempt.batch_size, "device": attempt.device},
                    accumulator=choose_accumulator(self.plan.n_classes, image.shape[1:], host)
                    if attempt.host_accumulator else None,
                )

            # out of memory: fewer windows per pass, host accumulator, CPU (medseg.inference.oom)
            probs = run_with_retries(run, attempts(options["batch_size"], self.device))
            if total is None:
                total = probs
            else:
                total += probs
        assert total is not None
        if len(self.networks) > 1:
            total /= len(self.networks)
        return total

    def _network_on(self, index: int, device: torch.device) -> nn.Module:
        """Fold ``index``'s network on ``device``: its own, or a CPU copy made once (the
        last out-of-memory retry of a GPU predictor)."""
        if device == self.device:
            return self.networks[index]
        if index not in self._host_networks:
            copy = host_copy(self.networks[index])
            self._host_networks[index] = prepare_network(copy, device, self.settings.amp)
        return self._host_networks[index]

    def predict(
        self,
        volume: Volume,
        preprocessed: PreprocessedCase | None = None,
        with_probabilities: bool = False,
    ) -> Prediction:
        """Label map (dataset label values) on ``volume``'s grid, keeping its metadata."""
        pre = preprocessed if preprocessed is not None else self.preprocess(volume)
        return self.from_probabilities(volume, pre, self.probabilities(pre.image),
                                       with_probabilities)

    def from_probabilities(
        self,
        volume: Volume,
        pre: PreprocessedCase,
        probs: np.ndarray,
        with_probabilities: bool = False,
    ) -> Prediction:
        """The prediction of ``volume`` from its class probabilities on the preprocessed
        grid (``probs`` may be released by the caller afterwards)."""
        source_probs = None
        if with_probabilities or _resamples(pre.record):
            source_probs = invert_probabilities(probs, pre.record)
            values = np.asarray(pre.record["label_values"])
            labels = values.astype(_label_dtype(values))[class_map(source_probs)]
        else:
            labels = invert_labels(class_map(probs), pre.record).array[0]
        del probs
        if self.settings.largest_component:
            labels = keep_largest_component(labels, [v for v in self.plan.label_values if v])
        return Prediction(volume.with_array(labels[None]),
                          source_probs if with_probabilities else None)


def class_map(probs: np.ndarray, chunk: int = 32) -> np.ndarray:
    """uint8 arg-max over classes, a few slices at a time (no int64 full-size temporary)."""
    out = np.empty(probs.shape[1:], dtype=np.uint8)
    for k in range(0, probs.shape[-1], chunk):
        out[..., k : k + chunk] = probs[..., k : k + chunk].argmax(0)
    return out


def predict_volume(model: Predictor, volume: Volume) -> Volume:
    """Label map of ``volume`` (same shape, affine and metadata) with the dataset's labels."""
    return model.predict(volume).labels


# --- loading ---------------------------------------------------------------------------------


def prepare_network(network: nn.Module, device: torch.device, amp: bool) -> nn.Module:
    """Move ``network`` (in place) to ``device`` in eval mode; with ``amp`` on a CPU with
    native bfloat16, convert its weights to bfloat16 (about 1.7x faster than autocast,
    which re-casts every weight on every call; same arg-max agreement with float32).
    On CPU its 3D convolutions always take oneDNN's kernel (``medseg.inference.cpu_kernels``)."""
    network = network.to(device).eval()
    if device.type == "cpu":
        use_onednn_convolutions(network)
    if amp and autocast_dtype(device) == torch.bfloat16:
        network = network.to(torch.bfloat16)
    return network


def find_checkpoints(
    model: Path, folds: Sequence[str | int] | None = None, config: str | None = None
) -> list[Path]:
    """Checkpoint files of a model path: a file, a fold folder, a configuration folder
    (``fold_*`` inside) or a run folder (``train/<config>/fold_*``)."""
    if model.is_file():
        if folds:
            raise ConfigError("--folds applies to a run folder, not a single checkpoint", model)
        return [model]
    if not model.is_dir():
        raise CheckpointError("model not found (give a run folder or a checkpoint file)", model)
    if _fold_checkpoint(model) is not None:
        return [_fold_checkpoint(model)]  # type: ignore[list-item]
    config_dir = _config_folder(model, config) if (model / "train").is_dir() else model
    fold_dirs = _fold_folders(config_dir, folds)
    found = [(d, _fold_checkpoint(d)) for d in fold_dirs]
    missing = [d.name for d, ckpt in found if ckpt is None]
    if folds and missing:
        raise CheckpointError(f"no checkpoint in fold folder(s) {', '.join(missing)}", config_dir)
    paths = [ckpt for _, ckpt in found if ckpt is not None]
    if not paths:
        raise CheckpointError("no trained fold found (no fold_*/checkpoint_*.pt)", config_dir)
    return paths


def _fold_checkpoint(folder: Path) -> Path | None:
    return next((folder / n for n in CHECKPOINT_NAMES if (folder / n).is_file()), None)


def _config_folder(run: Path, config: str | None) -> Path:
    available = sorted(p.name for p in (run / "train").iterdir() if p.is_dir())
    if config is not None:
        if config not in available:
            raise ConfigError(f"run has no trained configuration {config!r} "
                              f"(has {', '.join(available) or 'none'})", run)
        return run / "train" / config
    for name in (*DEFAULT_CONFIG_ORDER, *available):
        if name in available:
            return run / "train" / name
    raise CheckpointError("run folder has no trained configuration under train/", run)


def _fold_folders(config_dir: Path, folds: Sequence[str | int] | None) -> list[Path]:
    if folds:
        wanted = [config_dir / f"fold_{f}" for f in folds]
        absent = [p.name for p in wanted if not p.is_dir()]
        if absent:
            raise ConfigError(f"fold folder(s) {', '.join(absent)} not found", config_dir)
        return wanted
    return sorted(p for p in config_dir.glob("fold_*") if p.is_dir())


def _resamples(record: dict[str, Any]) -> bool:
    """True when preprocessing changed the voxel grid (probabilities must be interpolated)."""
    return any(s["name"] == "resample" and not s.get("identity", False)
               for s in record["steps"])


def _label_dtype(values: np.ndarray) -> type:
    return np.uint8 if values.min() >= 0 and values.max() <= 255 else np.int32

"""A trained model ready to predict: plan + one network per fold, ensembled by averaging
probabilities; label maps come back on the input's own grid (shape and affine).

``Predictor.load`` accepts a run folder (``RUN/train/<config>/fold_<k>/``), a
configuration folder, a fold folder, a single checkpoint file or an nnU-Net v2 model folder
(``<Trainer>__<Plans>__<config>/``, see :mod:`medseg.inference.nnunet`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.core import Volume
from medseg.core.errors import CheckpointError, ConfigError
from medseg.inference.cpu_kernels import use_onednn_convolutions
from medseg.inference.memory import CaseResources, release_free_memory
from medseg.inference.oom import Attempt, attempts, host_copy, run_with_retries
from medseg.inference.postprocess import ComponentEvidence, keep_largest_component, pool_evidence
from medseg.inference.sliding_window import (
    Accumulator,
    choose_accumulator,
    count_windows,
    predict_probabilities,
)
from medseg.models import build_network, load_checkpoint, load_weights
from medseg.models.runtime import autocast_dtype, flush_denormals, resolve_device
from medseg.preprocess.case import PreprocessedCase, preprocess_case
from medseg.preprocess.invert import invert_labels
from medseg.preprocess.invert_chunks import (
    DEFAULT_SLAB,
    background_fill,
    invert_argmax,
    invert_map,
    invert_slabs,
    preferred_slab,
)
from medseg.preprocess.nnunet_plans import is_nnunet_model_folder
from medseg.preprocess.plan import Plan

#: Checkpoint files looked for in a fold folder, in order of preference.
CHECKPOINT_NAMES = ("checkpoint_best.pt", "checkpoint_last.pt")
DEFAULT_CONFIG_ORDER = ("3d", "2d")
WINDOW_BAR_MIN = 20  # cases with fewer windows get no window-level progress bar


@dataclass(frozen=True)
class InferenceSettings:
    """How windows are predicted: overlap, mirroring (TTA), batch, mixed precision, and
    which classes keep only their largest connected component."""

    overlap: float = 0.5
    tta: bool | None = None  # test-time mirroring; None: the plan's choice (mirror_tta)
    batch_size: int | None = None  # windows per forward; None: 2 (3D) or the plan's (2D)
    amp: bool = True
    # True: every class, False: none, None: the classes for which it raised the model's
    # validation Dice (recorded by training, see Predictor.component_classes)
    largest_component: bool | None = None
    progress: bool = False  # a window-level progress bar for cases with many windows


@dataclass(frozen=True)
class Prediction:
    """A label map on the source grid and, if asked for, the class probabilities.

    The probabilities are kept on the preprocessed grid (``preprocessed_probabilities``,
    small) with the preprocessing ``record``; :meth:`probability_slabs` maps them onto the
    source grid slab by slab (what ``medseg predict --save-probabilities`` writes), and
    :attr:`probabilities` builds the whole float16 source-grid array on demand. Predictors
    that compute source-grid probabilities their own way (nnU-Net's export) give them as
    ``source_probabilities`` instead.
    """

    labels: Volume
    preprocessed_probabilities: np.ndarray | None = None  # (K, X, Y, Z), preprocessed grid
    record: dict[str, Any] | None = None
    slab: int = DEFAULT_SLAB
    source_probabilities: np.ndarray | None = None  # (K, I, J, K), already on the source grid

    @property
    def probabilities(self) -> np.ndarray | None:
        """float16 ``(K, I, J, K)`` on the source grid (full size; see probability_slabs)."""
        if self.source_probabilities is not None:
            return self.source_probabilities.astype(np.float16, copy=False)
        if self.preprocessed_probabilities is None or self.record is None:
            return None
        n_classes = self.preprocessed_probabilities.shape[0]
        return invert_map(self.preprocessed_probabilities, self.record, dtype=np.float16,
                          fill=background_fill(n_classes), slab=self.slab)

    @property
    def has_probabilities(self) -> bool:
        return self.source_probabilities is not None or (
            self.preprocessed_probabilities is not None and self.record is not None)

    def probability_slabs(self) -> Iterator[tuple[slice, np.ndarray]]:
        """``(k_slice, float16 (K, I, J, len(k_slice)))`` along the source's last axis."""
        if self.source_probabilities is not None:
            depth = self.source_probabilities.shape[-1]
            for start in range(0, depth, self.slab):
                k = slice(start, min(start + self.slab, depth))
                yield k, self.source_probabilities[..., k].astype(np.float16)
            return
        if self.preprocessed_probabilities is None or self.record is None:
            raise ValueError("predict(..., with_probabilities=True) keeps the probabilities")
        fill = background_fill(self.preprocessed_probabilities.shape[0])
        for k, values in invert_slabs(self.preprocessed_probabilities, self.record,
                                      slab=self.slab, fill=fill):
            yield k, values.numpy().astype(np.float16)


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
        evidence: ComponentEvidence | None = None,
    ) -> None:
        flush_denormals()
        if not networks:
            raise CheckpointError("a predictor needs at least one network")
        self.plan = plan
        self.config = config
        self.device = resolve_device(device)
        self.settings = settings or InferenceSettings()
        self.networks = [prepare_network(net, self.device, self.settings.amp)
                         for net in networks]
        self.checkpoints = [Path(p) for p in checkpoints]
        self.evidence = evidence  # validation evidence for the largest-component step
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
        networks, records = [], []
        for path in paths:
            ckpt = first if path == paths[0] else load_checkpoint(path, plan, config_name)
            net = build_network(plan, config_name)
            load_weights(net, ckpt, path)
            networks.append(net)
            if ckpt.get("postprocessing"):
                records.append(ComponentEvidence.from_dict(ckpt["postprocessing"]))
        return cls(plan, config_name, networks, device, settings, paths, pool_evidence(records))

    @property
    def mirroring(self) -> bool:
        """Whether windows are also predicted mirrored: as asked, else as planned."""
        if self.settings.tta is not None:
            return self.settings.tta
        return self.plan.configuration(self.config).training.mirror_tta

    @property
    def component_classes(self) -> tuple[int, ...]:
        """Label values reduced to their largest connected component: every class or none
        when the settings say so, else those for which it raised the validation Dice of the
        loaded folds (pooled over them; none for a model without that record)."""
        choice = self.settings.largest_component
        if choice is not None:
            return tuple(v for v in sorted(self.label_names) if v) if choice else ()
        if self.evidence is None:
            return ()
        return tuple(self.plan.label_values[k] for k in self.evidence.improved())

    @property
    def label_names(self) -> dict[int, str]:
        return dict(self.plan.labels)

    def describe(self) -> str:
        """One line: configuration, folds and device."""
        folds = ", ".join(p.parent.name for p in self.checkpoints) or "in-memory"
        names = [self.label_names.get(v, str(v)) for v in self.component_classes]
        return (f"{self.plan.dataset_name} {self.config} ({len(self.networks)} network(s): "
                f"{folds}) on {self.device}, mirroring {'on' if self.mirroring else 'off'}, "
                f"largest component only: {', '.join(names) or 'none'}")

    def windows_per_batch(self) -> int:
        """Windows per forward pass: the setting, else 2 (3D) or the plan's batch (2D)."""
        cfg = self.plan.configuration(self.config)
        return self.settings.batch_size or (2 if cfg.slice_axis is None else cfg.batch_size)

    def preprocess(self, volume: Volume) -> PreprocessedCase:
        """Apply the plan's preprocessing to an input image."""
        return preprocess_case(volume, None, self.plan)

    def window_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`predict_probabilities` for this model and settings."""
        cfg = self.plan.configuration(self.config)
        return {
            "patch_size": cfg.patch_size, "overlap": self.settings.overlap,
            "batch_size": self.windows_per_batch(), "device": self.device,
            "mirror_axes": cfg.training.mirror_axes if self.mirroring else (),
            "amp": self.settings.amp, "slice_axis": cfg.slice_axis,
        }

    def probabilities(self, image: np.ndarray, accumulator: Accumulator | None = None,
                      batch_size: int | None = None) -> np.ndarray:
        """Fold-averaged class probabilities ``(K, X, Y, Z)`` on the preprocessed grid
        (``accumulator`` and ``batch_size`` override the defaults, e.g. for a RAM budget)."""
        options = self.window_options()
        options["batch_size"] = batch_size or options["batch_size"]
        total: np.ndarray | None = None
        bar = window_bar(self, image.shape[1:], len(self.networks))
        for index in range(len(self.networks)):

            def run(attempt: Attempt, index: int = index) -> np.ndarray:
                host = torch.device("cpu")
                fallback = (choose_accumulator(self.plan.n_classes, image.shape[1:], host)
                            if attempt.host_accumulator else None)
                return predict_probabilities(
                    self._network_on(index, attempt.device), image,
                    **{**options, "batch_size": attempt.batch_size, "device": attempt.device},
                    accumulator=accumulator if accumulator is not None else fallback,
                    progress=bar.update if bar else None,
                )

            # out of memory: fewer windows per pass, host accumulator, CPU (medseg.inference.oom)
            probs = run_with_retries(run, attempts(options["batch_size"], self.device))
            if total is None:
                total = probs
            else:
                total += probs
        if bar is not None:
            bar.close()
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
        resources: CaseResources | None = None,
    ) -> Prediction:
        """Label map (dataset label values) on ``volume``'s grid, keeping its metadata.

        ``resources`` (from :func:`medseg.inference.memory.plan_case`) sets the accumulator,
        the windows per forward and the inversion slab for a memory budget.
        """
        pre = preprocessed if preprocessed is not None else self.preprocess(volume)
        res = resources or CaseResources()
        probs = self.probabilities(pre.image, res.accumulator, res.batch_size)
        release_free_memory()  # the windows' freed buffers, before the inversion allocates
        return self.from_probabilities(volume, pre, probs, with_probabilities, res.slab)

    def from_probabilities(
        self,
        volume: Volume,
        pre: PreprocessedCase,
        probs: np.ndarray,
        with_probabilities: bool = False,
        slab: int | None = None,
    ) -> Prediction:
        """The prediction of ``volume`` from its class probabilities on the preprocessed
        grid, inverted slab by slab (``slab`` source slices at a time; by default one that
        keeps the inversion's buffers small)."""
        slab = slab or preferred_slab(probs.shape[0], pre.record["source_shape"])
        labels = source_labels(probs, pre.record, slab)
        if self.component_classes:
            labels = keep_largest_component(labels, self.component_classes)
        kept = probs if with_probabilities else None
        del probs
        return Prediction(volume.with_array(labels[None]), kept,
                          pre.record if with_probabilities else None, slab)


def source_labels(probs: np.ndarray, record: dict[str, Any], slab: int = DEFAULT_SLAB
                  ) -> np.ndarray:
    """Label values on the source grid: arg-max on the preprocessed grid moved exactly
    when nothing was resampled, else interpolated slab by slab with arg-max on the fly."""
    if _resamples(record):
        return invert_argmax(probs, record, slab=slab)
    return invert_labels(class_map(probs), record).array[0]


def window_bar(predictor: Predictor, shape: Sequence[int], folds: int) -> Any:
    """A tqdm bar over the windows of a case, when the settings ask for progress and the
    case has at least ``WINDOW_BAR_MIN`` windows (None otherwise)."""
    if not predictor.settings.progress:
        return None
    cfg = predictor.plan.configuration(predictor.config)
    total = count_windows(shape, cfg.patch_size, predictor.settings.overlap, cfg.slice_axis)
    total *= folds
    if total < WINDOW_BAR_MIN:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="windows", unit="win", leave=False)


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

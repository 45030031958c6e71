"""nnU-Net v2 trained-model folders as medseg models.

``Predictor.load(<Trainer>__<Plans>__<config>/)`` returns an :class:`NnunetPredictor`: the
network is built from ``plans.json`` with nnU-Net's architecture package, and inference
reproduces nnU-Net's predictor (preprocessing and export in
:mod:`medseg.preprocess.nnunet_steps`; here its sliding-window steps and Gaussian, fold
ensembling of logits, mirroring over the checkpoint's allowed axes). Everything around it
is medseg's: DICOM input, NIfTI/DICOM-SEG output, batch and Dask prediction, reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.core import Volume
from medseg.core.errors import ConfigError
from medseg.inference.nnunet_window import nnunet_sliding_window
from medseg.inference.predictor import InferenceSettings, Prediction, Predictor
from medseg.models.nnunet import (
    build_nnunet_network,
    fold_checkpoints,
    load_nnunet_checkpoint,
    load_nnunet_weights,
)
from medseg.preprocess.case import PreprocessedCase
from medseg.preprocess.nnunet_plans import NnunetPlan, is_nnunet_model_folder
from medseg.preprocess.nnunet_steps import logits_to_source, preprocess_nnunet
from medseg.preprocess.plan import Configuration, Plan

__all__ = ["NnunetPredictor", "is_nnunet_model_folder"]


class NnunetPredictor(Predictor):
    """A :class:`Predictor` whose preprocessing, sliding window and export are nnU-Net's."""

    def __init__(self, nnunet_plan: NnunetPlan, networks: Sequence[torch.nn.Module],
                 device: str | torch.device = "cpu", settings: InferenceSettings | None = None,
                 checkpoints: Sequence[Path] = (), mirror_axes: Sequence[int] = ()) -> None:
        self.nnunet = nnunet_plan
        self.mirror_axes = tuple(int(a) for a in mirror_axes)
        super().__init__(describing_plan(nnunet_plan), nnunet_plan.configuration, networks,
                         device, settings, checkpoints)

    @classmethod
    def load_folder(cls, folder: str | Path, folds: Sequence[str | int] | None = None,
                    config: str | None = None, device: str | torch.device = "cpu",
                    settings: InferenceSettings | None = None) -> NnunetPredictor:
        """Every fold of an nnU-Net model folder (or the named ones: 0-4, ``all``)."""
        plan = NnunetPlan.load(folder)
        if config is not None and config != plan.configuration:
            raise ConfigError(f"the nnU-Net model folder holds configuration "
                              f"{plan.configuration!r}, not {config!r}", plan.folder)
        paths = fold_checkpoints(plan.folder, folds)
        networks, mirror_axes = [], ()
        for path in paths:
            ckpt = load_nnunet_checkpoint(path)
            net = build_nnunet_network(plan)
            load_nnunet_weights(net, ckpt, path)
            networks.append(net)
            mirror_axes = ckpt.get("inference_allowed_mirroring_axes") or mirror_axes
            del ckpt
        return cls(plan, networks, device, settings, paths, mirror_axes)

    @property
    def label_names(self) -> dict[int, str]:
        return dict(self.nnunet.labels.values)

    def describe(self) -> str:
        folds = ", ".join(p.parent.name for p in self.checkpoints) or "in-memory"
        return (f"nnU-Net {self.nnunet.dataset_name} {self.nnunet.trainer} "
                f"{self.config} ({len(self.networks)} network(s): {folds}) on {self.device}")

    def preprocess(self, volume: Volume) -> PreprocessedCase:
        return preprocess_nnunet(volume, self.nnunet)

    @torch.inference_mode()
    def logits(self, image: np.ndarray) -> torch.Tensor:
        """Fold-averaged logits ``(K, *preprocessed shape)``: nnU-Net averages the folds' logits
        (in float16, as it does)."""
        plan = self.nnunet
        mirror = (tuple(a + 1 for a in self.mirror_axes) if plan.is_2d else self.mirror_axes)
        total = None
        for net in self.networks:
            logits = nnunet_sliding_window(
                net, image, plan.patch_size, step=1.0 - self.settings.overlap,
                batch_size=self.settings.batch_size or (plan.batch_size if plan.is_2d else 1),
                device=self.device, mirror_axes=mirror if self.mirroring else (),
                amp=self.settings.amp, slice_axis=0 if plan.is_2d else None)
            total = logits if total is None else total.add_(logits)
        assert total is not None
        if len(self.networks) > 1:
            total.div_(len(self.networks))
        return total.float()

    def probabilities(self, image: np.ndarray, accumulator: Any = None,
                      batch_size: int | None = None) -> np.ndarray:
        """Class (or region) probabilities on the preprocessed grid (nnU-Net's window
        keeps its own accumulator and batch: the overrides are not used)."""
        logits = self.logits(image)
        if self.nnunet.labels.has_regions:
            return torch.sigmoid(logits).numpy()
        return torch.softmax(logits, dim=0).numpy()

    def predict(self, volume: Volume, preprocessed: PreprocessedCase | None = None,
                with_probabilities: bool = False, resources: Any = None) -> Prediction:
        """Label map on ``volume``'s grid, exported as nnU-Net does (``resources``, a RAM
        budget's choices for medseg's own window, do not apply)."""
        pre = preprocessed if preprocessed is not None else self.preprocess(volume)
        logits = self.logits(pre.image)
        labels, probs = logits_to_source(logits, pre.record, self.nnunet, with_probabilities)
        del logits
        if self.component_classes:
            from medseg.inference.postprocess import keep_largest_component
            labels = keep_largest_component(labels, self.component_classes)
        return Prediction(volume.with_array(labels[None]), source_probabilities=probs)


def describing_plan(plan: NnunetPlan) -> Plan:
    """A medseg :class:`Plan` describing the nnU-Net model (labels, channels, spacing and
    network) for the code that reads ``predictor.plan``; nnU-Net's own preprocessing is
    applied, not this plan's."""
    spacing = plan.spacing if not plan.is_2d else (plan.spacing[0], *plan.spacing)
    kwargs = plan.architecture.get("arch_kwargs", {})
    n_stages = int(kwargs.get("n_stages", 1))
    features = kwargs.get("features_per_stage", [0] * n_stages)
    config = Configuration(
        patch_size=plan.patch_size, batch_size=plan.batch_size,
        spacing=tuple(float(s) for s in plan.spacing),
        kernel_sizes=tuple(tuple(k) for k in kwargs.get("kernel_sizes", [])),
        strides=tuple(tuple(s) if isinstance(s, (list, tuple)) else (s,)
                      for s in kwargs.get("strides", [])),
        filters=tuple(int(f) for f in (features if isinstance(features, list)
                                       else [features] * n_stages)),
        deep_supervision=False, slice_axis=0 if plan.is_2d else None)
    untransposed = [0.0] * len(spacing)
    for i, axis in enumerate(plan.transpose_forward):
        untransposed[axis] = float(spacing[i])
    return Plan(
        dataset_name=plan.dataset_name, labels=dict(plan.labels.values),
        channels=dict(plan.channels), target_spacing=tuple(untransposed[::-1]),
        normalization=tuple({"scheme": f"nnunet:{n}", "use_mask": m}
                            for n, m in zip(plan.normalization, plan.use_mask_for_norm,
                                            strict=True)),
        configurations={plan.configuration: config})

"""nnU-Net-like automatic planning: target spacing, patch and batch size, DynUNet topology,
normalization, rotation, mirroring and partial annotation from a dataset fingerprint and a GPU
memory budget.

This is the *reference* plan: what nnU-Net would train on a GPU with that memory. Fitting
it to the device and the time budget (measured step times) is ``medseg.train.autoplan``'s
job, since measuring needs the network.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from medseg.core.errors import ConfigError
from medseg.data import Dataset
from medseg.preprocess.fingerprint import Fingerprint
from medseg.preprocess.plan import Configuration, Plan
from medseg.preprocess.steps import ANISOTROPY_RATIO, anisotropic_axis

MIN_FEATURE_MAP = 4  # no pooling below this many voxels along an axis
MAX_POOLS = {3: 5, 2: 6}
BASE_FILTERS = 32
MAX_FILTERS = {3: 320, 2: 512}
# Bytes kept per feature-map voxel during training: fp16 (2) x conv, norm and activation
# outputs (3) x two convolutions per block (2) x encoder and decoder (2).
BYTES_PER_FEATURE_VOXEL = 24
FIXED_OVERHEAD_GB = 1.0  # CUDA context, weights, optimizer state, workspace
MIN_BATCH = 2
MAX_BATCH_FRACTION = 0.05  # a batch covers at most 5% of the dataset's voxels
DEFAULT_MEMORY_GB = 8.0  # nnU-Net's reference GPU memory
PARTIAL_LABELS = ("auto", "on", "off")


def plan_dataset(
    dataset: Dataset, fingerprint: Fingerprint, memory_budget_gb: float = DEFAULT_MEMORY_GB,
    partial_labels: str = "auto",
) -> Plan:
    """Plan preprocessing and 3D/2D DynUNet configurations for ``dataset``.

    ``partial_labels``: "on" treats a class absent from a case's label as not annotated
    there, "off" as background; "auto" turns it on when some class is missing from some
    training cases (see :func:`partial_labels_choice`).
    """
    if memory_budget_gb <= FIXED_OVERHEAD_GB:
        raise ConfigError(f"memory budget must exceed {FIXED_OVERHEAD_GB} GB, "
                          f"got {memory_budget_gb}")
    spacing = target_spacing(fingerprint)
    shape = median_shape_at(fingerprint, spacing)
    dataset_voxels = float(np.prod(shape)) * fingerprint.n_cases
    sided = sided_labels(dataset.labels.values())
    slice_axis, slice_reason = choose_slice_axis(spacing, bool(sided))
    in_plane = [a for a in range(3) if a != slice_axis]
    configurations = {
        "3d": with_mirroring(with_rotation(plan_configuration(
            spacing, shape, dataset_voxels, memory_budget_gb), spacing), sided),
        "2d": with_mirroring(plan_configuration(
            [spacing[a] for a in in_plane], [shape[a] for a in in_plane], dataset_voxels,
            memory_budget_gb, slice_axis=slice_axis), sided),
    }
    configurations["2d"] = replace(configurations["2d"], reasons={
        **configurations["2d"].reasons, "slice_axis": slice_reason})
    partial, reason = partial_labels_choice(dataset, fingerprint, partial_labels)
    normalization = normalization_schemes(dataset, fingerprint)
    auto: dict[str, Any] = {"median_shape": [round(v, 1) for v in shape],
                            "n_cases": fingerprint.n_cases, "memory_gb": memory_budget_gb,
                            "partial_labels": reason,
                            "reasons": preprocessing_reasons(fingerprint, spacing,
                                                             normalization)}
    for name, config in configurations.items():  # a later edit differs from "chosen"
        chosen = {k: v for k, v in config.to_dict().items() if k != "reasons"}
        auto[name] = {"reference": config.to_dict(), "chosen": chosen}
    return Plan(
        dataset_name=dataset.name, labels=dict(dataset.labels), channels=dict(dataset.channels),
        target_spacing=tuple(spacing), normalization=normalization,
        configurations=configurations, partial_labels=partial, auto=auto,
    )


def preprocessing_reasons(fingerprint: Fingerprint, spacing: Sequence[float],
                          normalization: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Why the target spacing and each channel's normalization were chosen."""
    median = [round(v, 4) for v in fingerprint.median_spacing]
    axis = anisotropic_axis(median)
    why_spacing = f"median spacing of {fingerprint.n_cases} cases {median} mm"
    if list(spacing) != median and axis is not None:
        why_spacing += (f"; axis {axis} is anisotropic with few slices: its 10th percentile "
                        f"spacing {spacing[axis]:g} mm, as nnU-Net")
    reasons = {"target_spacing": why_spacing}
    for c, scheme in enumerate(normalization):
        if scheme["scheme"] == "ct":
            reasons[f"normalization.{c}"] = (
                f"CT: clip to the foreground's 0.5-99.5 percentiles [{scheme['clip'][0]:g}, "
                f"{scheme['clip'][1]:g}], z-score with the dataset's foreground mean "
                f"{scheme['mean']:.1f} and std {scheme['std']:.1f} (nnU-Net)")
        else:
            reasons[f"normalization.{c}"] = ("not CT: z-score each image inside its non-zero "
                                             "voxels, channel by channel")
    return reasons


def with_rotation(config: Configuration, spacing: Sequence[float]) -> Configuration:
    """In-plane rotation only for anisotropic data (as nnU-Net): rotating about an in-plane
    axis would tilt the coarse slices into the fine axes."""
    axis = anisotropic_axis(spacing)
    if axis is None:
        return config
    reasons = {**config.reasons, "training.rotation":
               f"spacing {list(spacing)} is anisotropic (axis {axis} > {ANISOTROPY_RATIO:g}x "
               f"the finest): rotate in-plane only, about axis {axis}"}
    return replace(config, training=replace(config.training, rotation="in-plane"),
                   reasons=reasons)


_SIDE_WORDS = frozenset({"left", "right", "l", "r", "lt", "rt"})
# words at case changes and separators; digits stay with their letters ("L1" is a vertebra)
_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+\d*|[A-Z]+\d*|\d+")


def sided_labels(names: Iterable[str]) -> list[str]:
    """The label names that name a body side ("LeftParotid", "Parotid_R", "kidney left",
    "RLung"): words split at case changes, digits and separators."""
    return [name for name in names
            if any(word.lower() in _SIDE_WORDS for word in _WORDS.findall(str(name)))]


#: Axes whose spacing is within this factor of the coarsest count as equally coarse.
SLICE_TIE = 1.05
#: Among equally coarse axes, 2D slices are taken across the superior-inferior axis first
#: (axial slices, the reading plane), then anterior-posterior (coronal), then left-right.
SLICE_PREFERENCE = (2, 1, 0)
_PLANES = {0: "sagittal", 1: "coronal", 2: "axial"}


def choose_slice_axis(spacing: Sequence[float], sided: bool) -> tuple[int, str]:
    """The RAS axis a 2D configuration slices across, and why.

    nnU-Net slices across the coarsest axis. Ties (within :data:`SLICE_TIE`) go to the
    axial, then the coronal plane: in RAS order ``argmax`` would pick left-right, i.e.
    sagittal slices. With side-named labels left-right is never the slice axis: a sagittal
    slice through the left parotid looks like one through the right, so a 2D network
    cannot tell the sides apart.
    """
    spacing = [float(s) for s in spacing]
    allowed = [a for a in SLICE_PREFERENCE if not (sided and a == 0)]
    coarsest = max(spacing[a] for a in allowed)
    axis = next(a for a in allowed if spacing[a] * SLICE_TIE >= coarsest)
    skipped = sided and spacing[0] > coarsest * SLICE_TIE
    why = (f"{_PLANES[axis]} slices: the coarsest axis{' but left-right' if skipped else ''} "
           f"({spacing[axis]:g} mm of {[round(s, 3) for s in spacing]} mm)")
    tied = [_PLANES[a] for a in allowed if a != axis and spacing[a] * SLICE_TIE >= coarsest]
    if skipped:
        why += "; not across left-right: labels name a body side"
    elif tied:
        why += f"; preferred to {' and '.join(tied)} slices, as coarse (axial, then coronal)"
    return axis, why


def with_mirroring(config: Configuration, sided: Sequence[str]) -> Configuration:
    """No mirroring across the left-right axis (axis 0 of the RAS-ordered arrays) when
    labels name a body side: a mirrored left parotid looks like a right one, and training
    on mirrored patches teaches the network to confuse them (TotalSegmentator turns
    mirroring off for this reason; nnU-Net mirrors every axis)."""
    if not sided:
        return config
    shown = ", ".join(sided[:4]) + (", ..." if len(sided) > 4 else "")
    reasons = {**config.reasons, "training.mirror_axes":
               f"labels name a body side ({shown}): mirror the anterior-posterior and "
               "superior-inferior axes only, in training and at test time"}
    return replace(config, training=replace(config.training, mirror_axes=(1, 2)),
                   reasons=reasons)


def partial_labels_choice(dataset: Dataset, fingerprint: Fingerprint, setting: str
                          ) -> tuple[bool, str]:
    """Whether classes absent from a case are treated as not annotated, and why."""
    if setting not in PARTIAL_LABELS:
        raise ConfigError(f"partial_labels must be one of {', '.join(PARTIAL_LABELS)}, "
                          f"got {setting!r}")
    if setting != "auto":
        return setting == "on", f"set to {setting}"
    names = [dataset.labels[v] for v in dataset.label_values]
    missing = [f"{name} ({100 * (1 - p):.0f}% of cases)"
               for name, p in zip(names[1:], fingerprint.class_presence[1:], strict=False)
               if p < 1.0]
    if not missing:
        return False, "auto: every class is present in every training case"
    return True, ("auto: classes missing from some training cases are treated as not "
                  "annotated there (excluded from the loss and not scored): "
                  + ", ".join(missing))


def target_spacing(fingerprint: Fingerprint) -> list[float]:
    """Median spacing; an anisotropic axis with few voxels gets its 10th percentile spacing."""
    spacings = np.asarray(fingerprint.spacings, dtype=np.float64)
    target = np.median(spacings, axis=0)
    shape = np.asarray(median_shape_at(fingerprint, target))
    worst = int(np.argmax(target))
    others = [a for a in range(len(target)) if a != worst]
    anisotropic_spacing = target[worst] > ANISOTROPY_RATIO * max(target[others])
    few_slices = shape[worst] * ANISOTROPY_RATIO < min(shape[others])
    if anisotropic_spacing and few_slices:
        target[worst] = max(np.percentile(spacings[:, worst], 10), max(target[others]) + 1e-5)
    return [float(round(v, 6)) for v in target]


def median_shape_at(fingerprint: Fingerprint, spacing: Sequence[float]) -> list[float]:
    """Median case shape (cropped) after resampling to ``spacing``."""
    shapes = np.asarray(fingerprint.shapes, dtype=np.float64)
    spacings = np.asarray(fingerprint.spacings, dtype=np.float64)
    return [float(v) for v in np.median(shapes * spacings / np.asarray(spacing), axis=0)]


def plan_configuration(
    spacing: Sequence[float], median_shape: Sequence[float], dataset_voxels: float,
    memory_budget_gb: float, slice_axis: int | None = None,
) -> Configuration:
    """Largest patch (up to the median shape) and batch fitting ``memory_budget_gb``."""
    dims = len(spacing)
    patch = [max(MIN_FEATURE_MAP, round(s)) for s in median_shape]
    budget = (memory_budget_gb - FIXED_OVERHEAD_GB) * 1024**3
    while True:
        strides, kernels = topology(spacing, patch, MAX_POOLS[dims])
        patch_rounded = round_to_strides(patch, strides)
        filters = [min(BASE_FILTERS * 2**level, MAX_FILTERS[dims]) for level in range(len(strides))]
        per_sample = training_bytes(patch_rounded, strides, filters)
        if MIN_BATCH * per_sample <= budget or max(patch) <= MIN_FEATURE_MAP:
            break
        patch = shrink_patch(patch, spacing, strides)
    voxels = float(np.prod(patch_rounded))
    cap = max(MIN_BATCH, int(MAX_BATCH_FRACTION * dataset_voxels / voxels))
    batch = int(np.clip(budget // per_sample, MIN_BATCH, cap))
    return Configuration(
        patch_size=tuple(patch_rounded), batch_size=batch,
        spacing=tuple(float(s) for s in spacing),
        kernel_sizes=tuple(tuple(k) for k in kernels), strides=tuple(tuple(s) for s in strides),
        filters=tuple(filters), deep_supervision=True, slice_axis=slice_axis,
    )


def topology(
    spacing: Sequence[float], patch: Sequence[float], max_pools: int
) -> tuple[list[list[int]], list[list[int]]]:
    """DynUNet strides and kernel sizes per level (first level stride 1).

    An axis is pooled while its feature map stays >= MIN_FEATURE_MAP voxels and its spacing
    is at most twice the finest one; kernels are 1 along axes still much coarser than that.
    """
    current = np.asarray(spacing, dtype=np.float64)
    size = np.asarray(patch, dtype=np.float64)
    strides = [[1] * len(current)]
    kernels = [_kernel(current)]
    while len(strides) <= max_pools:
        pool = (size / 2 >= MIN_FEATURE_MAP) & (current <= 2 * current.min())
        if not pool.any():
            break
        strides.append([2 if p else 1 for p in pool])
        size = np.where(pool, size / 2, size)
        current = np.where(pool, current * 2, current)
        kernels.append(_kernel(current))
    return strides, kernels


def round_to_strides(patch: Sequence[float], strides: Sequence[Sequence[int]]) -> list[int]:
    """Round each patch axis up to a multiple of its total stride."""
    divisor = np.prod(np.asarray(strides), axis=0)
    return [int(np.ceil(p / d) * d) for p, d in zip(patch, divisor, strict=True)]


def training_bytes(patch: Sequence[int], strides: Sequence[Sequence[int]],
                   filters: Sequence[int]) -> float:
    """Estimated activation memory of one training sample."""
    voxels = float(np.prod(patch))
    total = 0.0
    for level, stride in enumerate(strides):
        voxels /= float(np.prod(stride))
        total += voxels * filters[level]
    return total * BYTES_PER_FEATURE_VOXEL


def normalization_schemes(dataset: Dataset, fingerprint: Fingerprint) -> tuple[dict[str, Any], ...]:
    """CT: clip to foreground 0.5/99.5 percentiles, z-score with dataset foreground stats;
    any other modality: per-image z-score inside the non-zero mask."""
    schemes: list[dict[str, Any]] = []
    for c in sorted(dataset.channels):
        if dataset.channels[c].upper() == "CT":
            s = fingerprint.intensity[c]
            schemes.append({"scheme": "ct", "clip": [s.percentile_00_5, s.percentile_99_5],
                            "mean": s.mean, "std": s.std})
        else:
            schemes.append({"scheme": "zscore_nonzero"})
    return tuple(schemes)


def _kernel(spacing: np.ndarray) -> list[int]:
    return [3 if s <= 2 * spacing.min() else 1 for s in spacing]


def shrink_patch(
    patch: list[int], spacing: Sequence[float], strides: Sequence[Sequence[int]]
) -> list[int]:
    """Shrink the physically longest axis that can still shrink by one stride multiple."""
    extent = np.where(np.asarray(patch) > MIN_FEATURE_MAP,
                      np.asarray(patch) * np.asarray(spacing), -1.0)
    axis = int(np.argmax(extent))
    divisor = int(np.prod(np.asarray(strides)[:, axis]))
    out = list(patch)
    out[axis] = max(MIN_FEATURE_MAP, out[axis] - divisor)
    return out

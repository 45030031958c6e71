"""Memory of predicting one case, estimated from headers, and the choices that keep it
under a RAM budget (``medseg predict --max-ram`` / ``--estimate``).

The model (bytes, per case; measured against peak RSS in docs/benchmarks.md):

* ``base``: the process before the case (Python, torch, the loaded networks), measured;
* ``source``: the image as read (voxels x channels x bytes; DICOM with a rescale is float32).
  The batch drops it once preprocessed;
* ``preprocess``: the crop mask, the normalized float32 copy, scipy's float64 spline
  coefficients (cubic resampling), the in-plane resampling pass and the
  resampled image;
* ``windows``: the preprocessed image, the class accumulator (float32, float16, or on disk
  where the kernel may page it out), the network's feature maps for one batch of windows
  (``ACTIVATION_FACTOR`` live maps per level, measured) and the batch's logits;
* ``invert``: the accumulator, the label map on the source grid and one slab of the
  streaming inversion (:func:`medseg.preprocess.invert_chunks.slab_bytes`);
* ``write``: the label map, the probability slabs and the writer's copy.

Phases run one after the other; a batch overlaps reading the next case and writing the
previous one with the current prediction only when that also fits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from medseg.core import geometry
from medseg.core.errors import ConfigError
from medseg.inference.sliding_window import (
    HALF_PRECISION_THRESHOLD,
    Accumulator,
    count_windows,
)
from medseg.io.header_info import ImageGeometry
from medseg.preprocess.invert_chunks import preferred_slab, slab_bytes
from medseg.preprocess.steps import INTERPOLATION_ORDER, anisotropic_axis, target_shape

if TYPE_CHECKING:
    from medseg.inference.predictor import Predictor

GB = 10**9
#: Default budget: this fraction of the memory available when prediction starts.
DEFAULT_FRACTION = 0.7
#: Live feature maps per level and window during a forward pass (DynUNet, measured with
#: 128^3 and 64^3 patches in float32 and bfloat16: 4.7).
ACTIVATION_FACTOR = 5.0
#: Allocator slack on top of the model: freed heap the allocator keeps, torch's per-thread
#: buffers (measured on synthetic and real CTs: the largest phase x 1.25 + 64 MB covers it).
MARGIN = 1.25
OVERHEAD = 64 * 2**20


@dataclass(frozen=True)
class CaseResources:
    """How one case is predicted: accumulator, windows per forward, inversion slab."""

    accumulator: Accumulator | None = None
    batch_size: int | None = None
    slab: int | None = None  # None: preferred_slab of the case

    def describe(self) -> str:
        acc = self.accumulator
        where = "default accumulator" if acc is None else (
            f"{str(acc.dtype).removeprefix('torch.')} accumulator"
            f"{' on disk' if acc.on_disk else ''}")
        return f"{where}, {self.batch_size or 'default'} window(s) per forward, slab {self.slab}"


@dataclass(frozen=True)
class CaseEstimate:
    """Expected peak memory of one case with the resources chosen for it."""

    name: str
    source_shape: tuple[int, int, int]
    pre_shape: tuple[int, int, int]
    windows: int
    peak: int
    parts: dict[str, int]
    resources: CaseResources
    overlap_extra: int = 0  # what reading the next / writing the previous case adds

    def line(self) -> str:
        src = "x".join(map(str, self.source_shape))
        pre = "x".join(map(str, self.pre_shape))
        return (f"{self.name}: {src} -> {pre} (at most), {self.windows} window(s), "
                f"peak ~{self.peak / GB:.2f} GB ({self.resources.describe()})")


@dataclass(frozen=True)
class Workload:
    """The sizes that drive memory, from the image header and the model."""

    name: str
    source: ImageGeometry
    pre_shape: tuple[int, int, int]
    inplane_voxels: int
    windows: int
    n_classes: int
    folds: int
    patch_voxels: int
    activation_bytes_per_window: int
    default_batch: int
    value_bytes: int  # network compute type: 2 (bf16/fp16) or 4
    label_bytes: int
    # cubic 3D resampling: scipy's float64 spline coefficients of a whole channel (the
    # anisotropic case resamples plane by plane: one plane's worth)
    spline_prefilter: bool = False
    with_probabilities: bool = False
    largest_component: bool = False
    dicom_seg: bool = False
    extra: dict[str, int] = field(default_factory=dict)


# --- the machine ------------------------------------------------------------------------------


def available_memory() -> int:
    """Bytes the kernel says can be allocated without swapping (MemAvailable)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else 0
    return int(pages * os.sysconf("SC_PAGE_SIZE")) if pages else 8 * GB


def current_rss() -> int:
    """Resident memory of this process now, in bytes."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss() -> int:
    """Peak resident memory of this process's own address space, in bytes (``VmHWM``).

    Not ``ru_maxrss``: a process started by fork + exec (Python's ``subprocess``) reports
    there at least the memory its parent had at the fork.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@functools.cache
def _libc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Hand freed heap memory back to the kernel (glibc's ``malloc_trim``; a no-op
    elsewhere). Reading and writing run in their own threads, whose malloc arenas otherwise
    keep a phase's freed memory resident while the next phase allocates its own: measured
    up to +80 MB on a 256x256x128 case. Called between the phases of a case."""
    trim = _libc_trim()
    if trim is not None:
        trim(0)


def default_budget() -> int:
    """This process's memory now plus ``DEFAULT_FRACTION`` of what is still available."""
    return current_rss() + int(DEFAULT_FRACTION * available_memory())


def parse_gb(text: str | float) -> int:
    """``--max-ram`` value in GB (10^9 bytes) -> bytes; must be positive."""
    try:
        value = float(text)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--max-ram expects a number of GB, got {text!r}") from exc
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"--max-ram must be a positive number of GB, got {text!r}")
    return int(value * GB)


# --- sizes ------------------------------------------------------------------------------------


def workload(predictor: Predictor, name: str, source: ImageGeometry, *,
             with_probabilities: bool = False, dicom_seg: bool = False) -> Workload:
    """The sizes of predicting ``source`` (an upper bound: no crop assumed)."""
    plan, cfg = predictor.plan, predictor.plan.configuration(predictor.config)
    orientation = geometry.orientation_to_ras(source.affine)
    ras_affine = geometry.reoriented_affine(source.affine, orientation, source.shape)
    ras_shape = [0, 0, 0]
    for axis, (to, _) in enumerate(orientation):
        ras_shape[int(to)] = source.shape[axis]
    ras_spacing = geometry.spacing(ras_affine)
    pre = target_shape(ras_shape, ras_spacing, plan.target_spacing)
    inplane = list(pre)
    separate = anisotropic_axis(ras_spacing)
    separate = anisotropic_axis(plan.target_spacing) if separate is None else separate
    if separate is not None:  # the anisotropic axis is resampled in a second pass
        inplane[separate] = ras_shape[separate]
    patch = list(cfg.patch_size)
    if cfg.slice_axis is not None:
        patch.insert(cfg.slice_axis, 1)
    padded = [max(s, p) for s, p in zip(pre, patch, strict=True)]
    values = label_values_bytes(plan.label_values)
    amp_bytes = 2 if _half_precision(predictor) else 4
    return Workload(
        name=name, source=source, pre_shape=tuple(padded), inplane_voxels=math.prod(inplane),
        windows=count_windows(pre, cfg.patch_size, predictor.settings.overlap, cfg.slice_axis),
        n_classes=plan.n_classes, folds=len(predictor.networks),
        patch_voxels=math.prod(patch),
        activation_bytes_per_window=int(ACTIVATION_FACTOR * amp_bytes * _feature_values(
            cfg.filters, cfg.strides, cfg.patch_size)),
        default_batch=predictor.windows_per_batch(), value_bytes=amp_bytes, label_bytes=values,
        spline_prefilter=(INTERPOLATION_ORDER.get(plan.image_interpolation, 1) > 1
                          and tuple(pre) != tuple(ras_shape) and separate is None),
        with_probabilities=with_probabilities,
        largest_component=bool(predictor.component_classes), dicom_seg=dicom_seg,
    )


def label_values_bytes(values: Sequence[int]) -> int:
    return 1 if min(values) >= 0 and max(values) <= 255 else 4


def _half_precision(predictor: Predictor) -> bool:
    params = [p for net in predictor.networks for p in net.parameters()][:1]
    return bool(params) and params[0].dtype in (torch.bfloat16, torch.float16)


def _feature_values(filters: Sequence[int], strides: Sequence[Sequence[int]],
                     patch: Sequence[int]) -> float:
    """Values in one window's feature maps, summed over the resolution levels."""
    total, size = 0.0, np.asarray(patch, dtype=np.float64)
    for f, stride in zip(filters, strides, strict=False):
        size = np.maximum(size / np.asarray(stride, dtype=np.float64), 1)
        total += f * float(np.prod(size))
    return total


# --- the model --------------------------------------------------------------------------------


def phases(w: Workload, res: CaseResources) -> dict[str, int]:
    """Bytes above ``base`` in each phase of one case with resources ``res``."""
    src = w.source.voxels
    channels = w.source.n_channels
    pre = math.prod(w.pre_shape)
    image = 4 * channels * pre
    acc_dtype = res.accumulator.dtype if res.accumulator else _default_acc(w)
    acc_bytes = torch.empty((), dtype=acc_dtype).element_size()
    on_disk = res.accumulator is not None and res.accumulator.on_disk
    acc = 0 if on_disk else w.n_classes * pre * acc_bytes
    folds_extra = acc if w.folds > 1 else 0
    batch = res.batch_size or w.default_batch
    forward = batch * (w.activation_bytes_per_window + 8 * w.n_classes * w.patch_voxels)
    labels = src * w.label_bytes
    slab_depth = min(res.slab or preferred_slab(w.n_classes, w.source.shape), w.source.shape[2])
    slab = slab_depth * slab_bytes(w.n_classes, w.source.shape)
    read = src * channels * w.source.itemsize
    post = src * 6 if w.largest_component else 0  # int32 components + masks
    probs_out = slab_depth * w.source.shape[0] * w.source.shape[1] * w.n_classes * 6 \
        if w.with_probabilities else 0
    writer = src * (3 if w.dicom_seg else 1)
    masks = src * (channels + 1)  # the finite check / the crop's non-zero mask (bool)
    # cubic 3D resampling runs scipy's spline prefilter on the full-resolution channel
    # first: a float64 copy of it (it was the largest allocation on a 512x512x536 CT
    # before the anisotropic in-plane pass went plane by plane)
    spline = 8 * src if w.spline_prefilter else 0
    return {
        "read": read + src,
        "preprocess": read + masks + spline + 4 * channels * (src + w.inplane_voxels) + image,
        "windows": image + acc + folds_extra + forward,
        "invert": acc + labels + max(slab, post),
        "write": labels + writer + probs_out + (acc if w.with_probabilities else 0),
    }


def _default_acc(w: Workload) -> torch.dtype:
    n = w.n_classes * math.prod(w.pre_shape)
    return torch.float16 if n > HALF_PRECISION_THRESHOLD else torch.float32


def case_peak(w: Workload, res: CaseResources) -> tuple[int, dict[str, int]]:
    """Peak bytes above base of one case run alone, and its phases."""
    parts = phases(w, res)
    return int(MARGIN * max(parts.values())) + OVERHEAD, parts


def candidates(w: Workload, disk_folder: str | None = None) -> list[CaseResources]:
    """Resource choices from fastest to leanest (slab chosen later)."""
    cpu = torch.device("cpu")
    default = CaseResources(Accumulator(cpu, _default_acc(w)), None)
    half = CaseResources(Accumulator(cpu, torch.float16), None)
    single = replace(half, batch_size=1)
    disk = CaseResources(Accumulator(cpu, torch.float16, True, disk_folder), 1)
    out = [default]
    for option in (half, single, disk):
        if option not in out:
            out.append(option)
    return out


def plan_case(w: Workload, budget: int | None, base: int,
              disk_folder: str | None = None) -> CaseEstimate:
    """The fastest resources whose estimated peak (base + case) fits ``budget`` (None: the
    defaults). Raises ConfigError, saying how much is needed, when none fits."""
    options = candidates(w, disk_folder)
    preferred = preferred_slab(w.n_classes, w.source.shape)
    if budget is None:
        res = replace(options[0], slab=preferred)
        peak, parts = case_peak(w, res)
        return _estimate(w, base + peak, parts, res)
    for option in options:
        for slab in _slabs(preferred):
            res = replace(option, slab=slab)
            peak, parts = case_peak(w, res)
            if base + peak <= budget:
                return _estimate(w, base + peak, parts, res)
    leanest = replace(options[-1], slab=1)
    peak, parts = case_peak(w, leanest)
    worst = max(parts, key=parts.get)  # type: ignore[arg-type]
    raise ConfigError(
        f"--max-ram {budget / GB:.2f} GB is too small for {w.name}: it needs at least "
        f"{(base + peak) / GB:.2f} GB ({base / GB:.2f} GB already used by the process and "
        f"the model, {peak / GB:.2f} GB for the case at its largest, in the {worst} phase, "
        f"with a float16 accumulator on disk, one window per forward and 1-slice slabs)")


def _slabs(preferred: int) -> list[int]:
    """The preferred slab, then halves of it down to 1."""
    out = [preferred]
    while out[-1] > 1:
        out.append(out[-1] // 2)
    return out


def _estimate(w: Workload, peak: int, parts: dict[str, int],
              res: CaseResources) -> CaseEstimate:
    return CaseEstimate(w.name, w.source.shape, w.pre_shape, w.windows, peak, parts, res)


def overlap_fits(estimates: Sequence[CaseEstimate], budget: int | None) -> bool:
    """Whether reading the next case and writing the previous one while predicting the
    current one stays within ``budget`` (always true without a budget)."""
    if budget is None or len(estimates) < 2:
        return True
    reading = max(e.parts["preprocess"] for e in estimates)
    writing = max(e.parts["write"] for e in estimates)
    return all(e.peak + int(MARGIN * (reading + writing)) <= budget for e in estimates)

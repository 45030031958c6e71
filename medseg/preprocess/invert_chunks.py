"""Streaming inversion: map a map on the preprocessed grid back onto the source grid one
slab of source slices at a time, never holding a full-resolution multi-channel float volume.

The recorded steps (reorient, crop, resample; normalization needs no inverse) are each
separable along the axes, so the inverse is too: every source axis reads one axis of the
preprocessed grid through a per-index map (lower neighbour, upper neighbour, weight), the
same linear interpolation as ``invert.invert_probabilities`` (torch's ``trilinear`` with
``align_corners=False``, edges clamped). Voxels that the crop removed get ``fill``.

A slab is cut along the source's last axis (the slice axis of DICOM series). For each slab
only the few preprocessed slices it needs are read, converted to float32 and interpolated
axis by axis (the most shrinking axis first), then transposed into source order. Memory per
slab: about ``slab_bytes(channels, source_shape)`` per source slice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medseg.core.errors import GeometryError
from medseg.preprocess.invert import label_dtype

#: Source slices per slab when nobody says otherwise (see :func:`preferred_slab`).
DEFAULT_SLAB = 8
#: Working memory a slab aims at: larger slabs are not faster (measured), only bigger.
SLAB_TARGET_BYTES = 256 * 2**20
MAX_SLAB = 32
_KNOWN_STEPS = ("reorient", "crop", "normalize", "resample")


@dataclass(frozen=True)
class AxisMap:
    """How one source axis reads the preprocessed grid.

    Source indices ``inside[0] <= n < inside[1]`` survived the crop; index ``n`` there is
    ``(1 - weight) * pre[lo] + weight * pre[hi]`` along ``pre_axis`` (arrays indexed by
    ``n - inside[0]``). Indices outside get the fill value.
    """

    pre_axis: int
    inside: tuple[int, int]
    lo: np.ndarray  # int64
    hi: np.ndarray  # int64
    weight: np.ndarray  # float32
    pre_size: int

    @property
    def exact(self) -> bool:
        """True when every index reads exactly one preprocessed voxel (no interpolation)."""
        return not np.any(self.weight)


@dataclass(frozen=True)
class InverseMap:
    """The separable map from the source grid to the preprocessed grid of one case."""

    source_shape: tuple[int, int, int]
    pre_shape: tuple[int, int, int]
    axes: tuple[AxisMap, AxisMap, AxisMap]  # by source axis

    def pre_range(self, start: int, stop: int) -> tuple[int, int] | None:
        """Preprocessed index range ``[lo, hi)`` along the last source axis's preprocessed
        axis that source slices ``start:stop`` read; None if they are all cropped away."""
        axis = self.axes[-1]
        a, b = max(start, axis.inside[0]), min(stop, axis.inside[1])
        if a >= b:
            return None
        lo = axis.lo[a - axis.inside[0] : b - axis.inside[0]]
        hi = axis.hi[a - axis.inside[0] : b - axis.inside[0]]
        return int(lo.min()), int(hi.max()) + 1


def inverse_map(record: Mapping[str, Any]) -> InverseMap:
    """Build the source -> preprocessed map of a preprocessing record (see ``invert.py``)."""
    source_shape = tuple(int(n) for n in record["source_shape"])
    coords = [np.arange(n, dtype=np.float64) for n in source_shape]
    inside = [np.ones(n, dtype=bool) for n in source_shape]
    pre_axis = [0, 1, 2]
    for step in record["steps"]:
        name = step["name"]
        if name not in _KNOWN_STEPS:
            raise GeometryError(f"cannot invert unknown preprocessing step {name!r} "
                                f"(case {record.get('case')})")
        if name == "reorient":
            for d, (axis, flip) in enumerate(np.asarray(step["orientation"])):
                pre_axis[d] = int(axis)
                if flip < 0:
                    coords[d] = (source_shape[d] - 1) - coords[d]
        elif name == "crop":
            for d in range(3):
                lo, hi = step["bbox"][pre_axis[d]]
                coords[d] = coords[d] - lo
                inside[d] &= (coords[d] >= 0) & (coords[d] <= hi - lo - 1)
        elif name == "resample" and not step.get("identity", False):
            for d in range(3):
                before = step["shape_before"][pre_axis[d]]
                after = step["shape_after"][pre_axis[d]]
                coords[d] = (coords[d] + 0.5) * (after / before) - 0.5
    pre_shape = tuple(int(n) for n in record["shape"])
    axes = tuple(_axis_map(coords[d], inside[d], pre_axis[d], pre_shape[pre_axis[d]], record)
                 for d in range(3))
    return InverseMap(source_shape, pre_shape, axes)  # type: ignore[arg-type]


def _axis_map(coord: np.ndarray, inside: np.ndarray, pre_axis: int, size: int,
              record: Mapping[str, Any]) -> AxisMap:
    hits = np.flatnonzero(inside)
    if hits.size and hits[-1] - hits[0] + 1 != hits.size:
        raise GeometryError(f"crop of case {record.get('case')} is not one box")
    a, b = (int(hits[0]), int(hits[-1]) + 1) if hits.size else (0, 0)
    src = np.clip(coord[a:b], 0, size - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, size - 1)
    weight = (src - lo).astype(np.float32)
    return AxisMap(pre_axis, (a, b), lo, hi, weight, size)


# --- slabs ------------------------------------------------------------------------------------


def slab_bytes(n_channels: int, source_shape: Sequence[int]) -> int:
    """Working memory per source slice of a slab: the float32 result, the two neighbour
    gathers of the last interpolation pass and the arg-max/type-conversion temporaries."""
    plane = int(source_shape[0]) * int(source_shape[1])
    return plane * (3 * 4 * n_channels + 16)


def preferred_slab(n_channels: int, source_shape: Sequence[int]) -> int:
    """Slices per slab that keep one slab near ``SLAB_TARGET_BYTES`` (1 to ``MAX_SLAB``)."""
    per_slice = slab_bytes(n_channels, source_shape)
    return int(min(MAX_SLAB, max(1, SLAB_TARGET_BYTES // per_slice)))


def invert_slabs(
    array: np.ndarray | torch.Tensor,
    record: Mapping[str, Any] | InverseMap,
    *,
    slab: int = DEFAULT_SLAB,
    fill: float | Sequence[float] = 0.0,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(k_slice, values)``: float32 ``(C, I, J, len(k_slice))`` on the source grid
    for consecutive slabs of ``slab`` slices along the source's last axis.

    ``array`` is ``(C, X, Y, Z)`` on the preprocessed grid (any float type; a memmap is
    read only where needed). ``fill`` (a number or one per channel) is given to voxels
    the crop removed. The yielded tensor may be a view; copy it to keep it.
    """
    imap = record if isinstance(record, InverseMap) else inverse_map(record)
    source = torch.from_numpy(array) if isinstance(array, np.ndarray) else array
    _check_pre_shape(tuple(source.shape), imap, record)
    fills = torch.as_tensor(np.broadcast_to(np.asarray(fill, dtype=np.float32),
                                            (source.shape[0],)).copy())
    depth = imap.source_shape[2]
    for start in range(0, depth, max(int(slab), 1)):
        stop = min(start + max(int(slab), 1), depth)
        yield slice(start, stop), _slab(source, imap, start, stop, fills)


def _slab(source: torch.Tensor, imap: InverseMap, start: int, stop: int,
          fills: torch.Tensor) -> torch.Tensor:
    shape = (source.shape[0], imap.source_shape[0], imap.source_shape[1], stop - start)
    last = imap.axes[2]
    k0, k1 = max(start, last.inside[0]), min(stop, last.inside[1])
    inner = [ax.inside for ax in imap.axes[:2]]
    empty = k0 >= k1 or any(a >= b for a, b in inner)
    if empty:
        return fills.view(-1, 1, 1, 1).expand(shape).contiguous()
    values = _interpolate(source, imap, k0, k1)
    whole = all(a == 0 and b == n for (a, b), n in zip(inner, shape[1:3], strict=True))
    if whole and (k0, k1) == (start, stop):
        return values
    out = fills.view(-1, 1, 1, 1).expand(shape).contiguous()
    (a0, b0), (a1, b1) = inner
    out[:, a0:b0, a1:b1, k0 - start : k1 - start] = values
    return out


def _interpolate(source: torch.Tensor, imap: InverseMap, k0: int, k1: int) -> torch.Tensor:
    """Source-order float32 values of source slices ``k0:k1`` (all inside the crop)."""
    last = imap.axes[2]
    rows = slice(k0 - last.inside[0], k1 - last.inside[0])
    lo, hi = last.lo[rows], last.hi[rows]
    first, end = int(lo.min()), int(hi.max()) + 1
    window = [slice(None)] * 4
    window[1 + last.pre_axis] = slice(first, end)
    block = source[tuple(window)].float()
    passes = [(last.pre_axis, lo - first, hi - first, last.weight[rows])]
    for ax in sorted(imap.axes[:2], key=lambda ax: (_growth(ax), -ax.pre_axis)):
        passes.append((ax.pre_axis, ax.lo, ax.hi, ax.weight))
    for pre_axis, lo_i, hi_i, weight in passes:
        block = _lerp_axis(block, 1 + pre_axis, lo_i, hi_i, weight)
    order = [1 + ax.pre_axis for ax in imap.axes]
    return block.permute(0, *order)


def _growth(ax: AxisMap) -> float:
    return len(ax.lo) / max(ax.pre_size, 1)


def _lerp_axis(block: torch.Tensor, dim: int, lo: np.ndarray, hi: np.ndarray,
               weight: np.ndarray) -> torch.Tensor:
    """Linear interpolation of ``block`` along ``dim`` at (lo, hi, weight)."""
    identity = (len(lo) == block.shape[dim] and not np.any(weight)
                and np.array_equal(lo, np.arange(len(lo))))
    if identity:
        return block
    low = block.index_select(dim, torch.from_numpy(lo))
    if not np.any(weight):
        return low
    high = block.index_select(dim, torch.from_numpy(hi))
    shape = [1] * block.ndim
    shape[dim] = -1
    return low.lerp_(high, torch.from_numpy(weight).view(shape))


# --- whole outputs built slab by slab ---------------------------------------------------------


def invert_map(
    array: np.ndarray | torch.Tensor,
    record: Mapping[str, Any],
    *,
    dtype: np.dtype | type = np.float32,
    fill: float | Sequence[float] = 0.0,
    slab: int = DEFAULT_SLAB,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """A ``(C, X, Y, Z)`` float map on the preprocessed grid (probabilities, an uncertainty
    map, ...) on the source grid as ``dtype`` ``(C, I, J, K)``, built slab by slab: the
    only full-size array is the result (pass ``out``, e.g. a memmap, to choose where it
    lives). Cropped-away voxels get ``fill``. Equals ``invert_probabilities`` (linear) to
    float32 rounding for probabilities with ``fill`` = one-hot background.
    """
    imap = inverse_map(record)
    n_channels = array.shape[0]
    if out is None:
        out = np.empty((n_channels, *imap.source_shape), dtype=dtype)
    elif out.shape != (n_channels, *imap.source_shape):
        raise GeometryError(f"output array {out.shape} is not the source grid "
                            f"{(n_channels, *imap.source_shape)}")
    for k, values in invert_slabs(array, imap, slab=slab, fill=fill):
        out[..., k] = values.numpy()
    return out


def background_fill(n_classes: int) -> np.ndarray:
    """Fill value of class probabilities outside the crop: all mass on class 0."""
    fill = np.zeros(n_classes, dtype=np.float32)
    fill[0] = 1.0
    return fill


def invert_argmax(
    probs: np.ndarray | torch.Tensor,
    record: Mapping[str, Any],
    *,
    slab: int = DEFAULT_SLAB,
) -> np.ndarray:
    """Label values ``(I, J, K)`` (uint8, or int32 for values beyond 0-255) on the source
    grid: class scores ``(K, X, Y, Z)`` interpolated slab by slab, arg-max on the fly.

    Equals ``values[argmax(invert_probabilities(probs, record))]`` (up to float32 rounding
    at exact ties) with one slab of float32 working memory.
    """
    values = np.asarray(record["label_values"])
    lookup = torch.from_numpy(values.astype(label_dtype(values)))
    imap = inverse_map(record)
    # Fortran order: each slab is one contiguous block, and NIfTI writers need no copy
    out = np.empty(imap.source_shape, dtype=label_dtype(values), order="F")
    fill = background_fill(probs.shape[0])
    for k, scores in invert_slabs(probs, imap, slab=slab, fill=fill):
        out[..., k] = lookup[scores.argmax(dim=0)].numpy()
    return out


def _check_pre_shape(shape: tuple[int, ...], imap: InverseMap, record: Any) -> None:
    if len(shape) != 4 or tuple(shape[1:]) != imap.pre_shape:
        case = record.get("case") if isinstance(record, Mapping) else None
        raise GeometryError(f"map shape {list(shape)} does not match the preprocessed grid "
                            f"{list(imap.pre_shape)} of case {case}")

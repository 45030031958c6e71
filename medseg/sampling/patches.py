"""Pure patch geometry: where a patch starts, and reading it (padded) from a memmap.

A patch may extend past the case (cases smaller than the patch, or foreground near the
border): only the overlapping region is read from disk and the rest is padded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def start_range(size: int, patch: int) -> tuple[int, int]:
    """Inclusive range of patch starts along one axis.

    Larger cases: the patch stays inside (``0 .. size - patch``). Smaller cases: the patch
    covers the whole case, which lands anywhere inside it (``size - patch .. 0``).
    """
    return (0, size - patch) if size >= patch else (size - patch, 0)


def random_start(
    shape: Sequence[int], patch_size: Sequence[int], rng: np.random.Generator
) -> tuple[int, ...]:
    """A uniformly random valid patch start."""
    ranges = [start_range(s, p) for s, p in zip(shape, patch_size, strict=True)]
    return tuple(int(rng.integers(lo, hi + 1)) for lo, hi in ranges)


def centered_start(
    shape: Sequence[int], patch_size: Sequence[int], center: Sequence[int]
) -> tuple[int, ...]:
    """The valid patch start whose patch centre is closest to ``center``."""
    starts = []
    for s, p, c in zip(shape, patch_size, center, strict=True):
        lo, hi = start_range(s, p)
        starts.append(int(np.clip(int(c) - p // 2, lo, hi)))
    return tuple(starts)


def read_patch(
    array: np.ndarray, start: Sequence[int], patch_size: Sequence[int], pad_value: float = 0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Read ``array[:, start:start+patch]`` (channel-first), padding outside the array.

    Only the part inside the array is sliced, so a memmapped array reads just the patch.
    With ``out`` (shape ``(C, *patch_size)``, e.g. one sample of a preallocated batch) the
    patch is written there and ``out`` is returned; no intermediate copies are made.
    """
    spatial = array.shape[1:]
    src, dst = [], []
    for b, p, s in zip(start, patch_size, spatial, strict=True):
        lo, hi = max(b, 0), min(b + p, s)
        src.append(slice(lo, hi))
        dst.append(slice(lo - b, hi - b))
    if out is None:
        out = np.empty((array.shape[0], *patch_size), dtype=array.dtype)
    if any(d.start > 0 or d.stop < p for d, p in zip(dst, patch_size, strict=True)):
        out.fill(pad_value)
    out[(slice(None), *dst)] = array[(slice(None), *src)]
    return out


def patch_size_3d(patch_size: Sequence[int], slice_axis: int | None) -> tuple[int, ...]:
    """The 3D box a patch reads: 2D patches get size 1 along ``slice_axis``."""
    patch = [int(p) for p in patch_size]
    if slice_axis is not None:
        patch.insert(slice_axis, 1)
    return tuple(patch)

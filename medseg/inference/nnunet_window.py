"""nnU-Net v2's sliding window, numerically: its window starts, its Gaussian (sigma =
patch / 8, centred on voxel ``patch // 2``, scaled to 10, float16) and its float16
accumulation of ``logits * gaussian`` and of the weights, windows added in nnU-Net's
order. Reproducing the float16 arithmetic (rather than medseg's normalised float32
accumulation) keeps the logits equal to nnU-Net's where its window corners have
Gaussian weights near float16's smallest values. Returns the averaged logits.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from medseg.inference.sliding_window import (
    Network,
    _batches,
    _flip_sets,
    _padding,
    _patch_for,
    _predict_logits,
)

GAUSSIAN_SCALE = 10.0  # nnU-Net's value_scaling_factor


def nnunet_window_starts(image_size: int, patch_size: int, step: float = 0.5) -> list[int]:
    """Window starts along one axis for ``tile_step_size`` ``step``: the fewest windows whose
    spacing is at most ``patch * step``, evenly spread and rounded. An axis of patch size 1
    (the slice axis of 2D models) gets every slice."""
    if patch_size == 1:
        return list(range(image_size))
    if image_size <= patch_size:
        return [0]
    n = int(np.ceil((image_size - patch_size) / (patch_size * step))) + 1
    actual = (image_size - patch_size) / (n - 1)
    return [int(np.round(actual * i)) for i in range(n)]


@functools.lru_cache(maxsize=4)
def nnunet_gaussian(patch_size: tuple[int, ...]) -> torch.Tensor:
    """The importance map as nnU-Net computes it: a unit impulse at ``patch // 2`` blurred
    with sigma ``patch / 8`` (scipy, truncated at 4 sigma), scaled to a maximum of 10,
    cast to float16, zeros raised to the smallest non-zero weight."""
    impulse = np.zeros(patch_size)
    impulse[tuple(p // 2 for p in patch_size)] = 1
    g = ndimage.gaussian_filter(impulse, [p / 8 for p in patch_size], 0, mode="constant", cval=0)
    g /= g.max() / GAUSSIAN_SCALE
    half = torch.from_numpy(g).to(torch.float16)
    zero = half == 0
    if zero.any():
        half[zero] = half[~zero].min()
    return half


@torch.inference_mode()
def nnunet_sliding_window(
    network: Network, image: np.ndarray, patch_size: Sequence[int], *, step: float = 0.5,
    batch_size: int = 1, device: torch.device | str = "cpu",
    mirror_axes: Sequence[int] = (), amp: bool = False, slice_axis: int | None = None,
) -> torch.Tensor:
    """Averaged logits ``(K, X, Y, Z)`` (float16, CPU) of a preprocessed image ``(C, X, Y, Z)``.

    ``patch_size`` is the network's (2D with ``slice_axis`` 0 for 2D models); the image is
    padded to at least the patch (centred, zeros) and the padding removed again.
    ``mirror_axes`` are spatial axes 0-2 of the image (test-time mirroring).
    """
    device = torch.device(device)
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    patch = _patch_for(patch_size, slice_axis)
    shape = tuple(tensor.shape[1:])
    pads = _padding(shape, patch)
    if any(before or after for before, after in pads):
        tensor = torch.nn.functional.pad(tensor, [v for pair in reversed(pads) for v in pair])
    padded = tuple(tensor.shape[1:])
    grid = [nnunet_window_starts(n, p, step) for n, p in zip(padded, patch, strict=True)]
    windows = [tuple(slice(s, s + p) for s, p in zip(starts, patch, strict=True))
               for starts in itertools.product(*grid)]
    gaussian = nnunet_gaussian(tuple(int(p) for p in patch_size))
    weight = gaussian if slice_axis is None else gaussian.unsqueeze(slice_axis)
    flips = _flip_sets(mirror_axes, patch)
    acc: torch.Tensor | None = None
    counts = torch.zeros(padded, dtype=torch.float16)
    for chunk in _batches(windows, batch_size):
        batch = torch.stack([tensor[(slice(None), *w)] for w in chunk]).to(device)
        logits = _predict_logits(network, batch, flips, slice_axis, amp).cpu()
        if acc is None:
            acc = torch.zeros((logits.shape[1], *padded), dtype=torch.float16)
        for b, w in enumerate(chunk):
            acc[(slice(None), *w)] += logits[b] * weight
            counts[w] += weight
    assert acc is not None
    torch.div(acc, counts, out=acc)
    crop = tuple(slice(before, before + s) for (before, _), s in zip(pads, shape, strict=True))
    return acc[(slice(None), *crop)]

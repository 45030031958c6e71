"""Sliding-window prediction with Gaussian importance weighting.

The volume is covered by evenly spaced windows of the network's patch size; each window's
logits are weighted by a Gaussian (peak at the patch centre, sigma = patch / 8) and the
weighted logits are averaged, then turned into probabilities with a softmax.

Memory: the Gaussian is separable and the windows form a Cartesian grid, so the sum of
the weights at every voxel is an outer product of per-axis sums. Each window's weights are
divided by that sum *before* they are accumulated, so the accumulator directly holds the
weighted average: no weight-sum volume is stored and every contribution is bounded by the
logits themselves, which makes float16 accumulation safe for large volumes.

2D configurations run slice by slice: the patch gets size 1 along ``slice_axis`` and the
network sees 2D batches, so both share the same stitching code.
"""

from __future__ import annotations

import itertools
import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from medseg.models.runtime import autocast_dtype, cpu_supports_bfloat16  # noqa: F401

Network = Callable[[torch.Tensor], torch.Tensor]

#: Above this many accumulated values (classes x voxels), accumulate in float16 on CPU.
HALF_PRECISION_THRESHOLD = 2**27  # 512 MiB of float32


# --- pure window geometry --------------------------------------------------------------------


def window_starts(image_size: int, patch_size: int, overlap: float = 0.5) -> list[int]:
    """Start indices of windows of ``patch_size`` covering ``image_size`` along one axis.

    Windows are evenly spaced (to the voxel), the first at 0 and the last ending at the
    image border; neighbours overlap by at least ``overlap`` of the patch. An image no
    larger than the patch gets one window at 0 (the caller pads).
    """
    if patch_size < 1 or image_size < 1:
        raise ValueError(f"sizes must be positive, got image {image_size}, patch {patch_size}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if image_size <= patch_size:
        return [0]
    span = image_size - patch_size
    max_step = max(math.floor(patch_size * (1.0 - overlap) + 1e-9), 1)
    n = math.ceil(span / max_step) + 1
    return [i * span // (n - 1) for i in range(n)]


def window_grid(
    image_shape: Sequence[int], patch_size: Sequence[int], overlap: float = 0.5
) -> list[list[int]]:
    """Per-axis window starts for an N-dimensional image."""
    if len(image_shape) != len(patch_size):
        raise ValueError(f"image shape {tuple(image_shape)} vs patch size {tuple(patch_size)}")
    return [window_starts(s, p, overlap) for s, p in zip(image_shape, patch_size, strict=True)]


def window_slices(
    image_shape: Sequence[int], patch_size: Sequence[int], overlap: float = 0.5
) -> list[tuple[slice, ...]]:
    """Every window (as a tuple of slices) over an image of ``image_shape``."""
    grid = window_grid(image_shape, patch_size, overlap)
    return [
        tuple(slice(s, s + p) for s, p in zip(starts, patch_size, strict=True))
        for starts in itertools.product(*grid)
    ]


def gaussian_1d(size: int, sigma_scale: float = 1.0 / 8) -> np.ndarray:
    """Gaussian over ``size`` samples centred on the patch: max 1, sigma = size * sigma_scale."""
    if size == 1:
        return np.ones(1)
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-0.5 * (x / (size * sigma_scale)) ** 2)
    return g / g.max()


def gaussian_weights(patch_size: Sequence[int], sigma_scale: float = 1.0 / 8) -> np.ndarray:
    """Separable Gaussian importance map over a patch (float32, max 1, strictly positive)."""
    weights = np.ones((), dtype=np.float64)
    for size in patch_size:
        weights = np.multiply.outer(weights, gaussian_1d(int(size), sigma_scale))
    return weights.astype(np.float32)


def normalized_axis_weights(
    image_size: int, patch_size: int, starts: Sequence[int], sigma_scale: float = 1.0 / 8
) -> list[np.ndarray]:
    """Per-window 1D weights along one axis, divided by their sum over all windows.

    The product over axes of these vectors is each window's Gaussian divided by the total
    Gaussian weight at every voxel, so accumulating ``logits * weight`` yields the weighted
    average directly.
    """
    g = gaussian_1d(patch_size, sigma_scale)
    total = np.zeros(image_size)
    for s in starts:
        total[s : s + patch_size] += g
    return [g / total[s : s + patch_size] for s in starts]


# --- accumulation policy ---------------------------------------------------------------------


@dataclass(frozen=True)
class Accumulator:
    """Where and in which precision the weighted logits are summed; ``on_disk`` keeps a CPU
    accumulator in an unlinked temporary file (``folder``, default the system's) mapped into
    memory, so the kernel can page it out instead of running out of RAM."""

    device: torch.device
    dtype: torch.dtype
    on_disk: bool = False
    folder: str | None = None

    def zeros(self, shape: Sequence[int]) -> torch.Tensor:
        """A zero-filled accumulator of ``shape``."""
        if not self.on_disk:
            return torch.zeros(tuple(shape), dtype=self.dtype, device=self.device)
        np_dtype = torch.empty((), dtype=self.dtype).numpy().dtype
        with tempfile.TemporaryFile(dir=self.folder, prefix="medseg-acc-") as fh:
            array = np.memmap(fh, dtype=np_dtype, mode="w+", shape=tuple(shape))
        return torch.from_numpy(array)  # the mapping outlives the (unlinked) file's handle


def choose_accumulator(
    n_classes: int, spatial_shape: Sequence[int], device: torch.device
) -> Accumulator:
    """Accumulate on the compute device when it has room, else on CPU (float16 if large)."""
    n_values = n_classes * math.prod(spatial_shape)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if n_values * 4 < free // 4:
            return Accumulator(device, torch.float32)
        if n_values * 2 < free // 4:
            return Accumulator(device, torch.float16)
    dtype = torch.float16 if n_values > HALF_PRECISION_THRESHOLD else torch.float32
    return Accumulator(torch.device("cpu"), dtype)


# --- prediction ------------------------------------------------------------------------------


def network_dtype(network: Network) -> torch.dtype:
    """Floating-point type of a module's parameters (float32 for plain callables)."""
    if isinstance(network, torch.nn.Module):
        for param in network.parameters():
            if param.is_floating_point():
                return param.dtype
    return torch.float32


def _as_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    tensor = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.asarray(image))
    if tensor.ndim != 4:
        shape = tuple(tensor.shape)
        raise ValueError(f"image must be channel-first (C, X, Y, Z), got shape {shape}")
    return tensor.float()


def _patch_for(patch_size: Sequence[int], slice_axis: int | None) -> tuple[int, int, int]:
    """3D window size: the 2D patch gets size 1 inserted along ``slice_axis``."""
    patch = [int(p) for p in patch_size]
    if slice_axis is None:
        if len(patch) != 3:
            raise ValueError(f"3D prediction needs a 3D patch size, got {patch}")
        return tuple(patch)  # type: ignore[return-value]
    if len(patch) != 2 or slice_axis not in (0, 1, 2):
        raise ValueError(f"2D prediction needs a 2D patch and slice_axis 0-2, got {patch}")
    patch.insert(slice_axis, 1)
    return tuple(patch)  # type: ignore[return-value]


def _padding(shape: Sequence[int], patch: Sequence[int]) -> list[tuple[int, int]]:
    """Symmetric (before, after) padding that makes every axis at least the patch size."""
    pads = []
    for s, p in zip(shape, patch, strict=True):
        extra = max(p - s, 0)
        pads.append((extra // 2, extra - extra // 2))
    return pads


def mirror_sets(
    mirror_axes: Sequence[int], patch_size: Sequence[int], slice_axis: int | None = None
) -> list[tuple[int, ...]]:
    """Every subset of the mirrored spatial axes (0-2) that the window can flip (an axis of
    window size 1, the slice axis of a 2D configuration, is never mirrored); ``()`` first."""
    patch = _patch_for(patch_size, slice_axis)
    axes = [a for a in mirror_axes if patch[a] > 1]
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def _flip_sets(mirror_axes: Sequence[int], patch: Sequence[int]) -> list[tuple[int, ...]]:
    """:func:`mirror_sets` of a 3D window as tensor dims of a (B, C, X, Y, Z) batch."""
    return _as_dims(mirror_sets(mirror_axes, patch))


def _as_dims(mirrors: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    return [tuple(a + 2 for a in m) for m in mirrors]


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _forward(
    network: Network, batch: torch.Tensor, slice_axis: int | None, amp: bool
) -> torch.Tensor:
    """Network logits for a (B, C, X, Y, Z) batch; 2D networks see the slice axis squeezed."""
    x = batch if slice_axis is None else batch.squeeze(slice_axis + 2)
    weights = network_dtype(network)
    if weights != torch.float32:  # a network already converted to half precision
        x = x.to(weights)
    dtype = autocast_dtype(batch.device) if amp and weights == torch.float32 else None
    with torch.autocast(batch.device.type, dtype=dtype, enabled=dtype is not None):
        out = network(x)
    if isinstance(out, (list, tuple)):  # deep-supervision outputs: full resolution first
        out = out[0]
    out = out.float()
    return out if slice_axis is None else out.unsqueeze(slice_axis + 2)


def _predict_logits(
    network: Network,
    batch: torch.Tensor,
    flips: Sequence[tuple[int, ...]],
    slice_axis: int | None,
    amp: bool,
) -> torch.Tensor:
    """Logits averaged over the mirrored copies of the batch (test-time augmentation)."""
    total = None
    for dims in flips:
        x = torch.flip(batch, dims) if dims else batch
        out = _forward(network, x, slice_axis, amp)
        out = torch.flip(out, dims) if dims else out
        total = out if total is None else total + out
    assert total is not None
    return total / len(flips)


def _softmax_inplace(acc: torch.Tensor, chunk: int = 16) -> None:
    """Softmax over the class axis, a few slices of the last axis at a time."""
    for k in range(0, acc.shape[-1], chunk):
        part = acc[..., k : k + chunk]
        part.copy_(torch.softmax(part.float(), dim=0).to(acc.dtype))


@torch.inference_mode()
def predict_probabilities(
    network: Network,
    image: np.ndarray | torch.Tensor,
    patch_size: Sequence[int],
    *,
    overlap: float = 0.5,
    batch_size: int = 2,
    device: str | torch.device = "cpu",
    mirror_axes: Sequence[int] = (),
    amp: bool = True,
    slice_axis: int | None = None,
    sigma_scale: float = 1.0 / 8,
    accumulator: Accumulator | None = None,
    mirrors: Sequence[Sequence[int]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Class probabilities ``(K, X, Y, Z)`` of a preprocessed image ``(C, X, Y, Z)``.

    ``network`` maps ``(B, C, *patch)`` to logits ``(B, K, *patch)`` and must already be on
    ``device`` and in eval mode; a network converted to bfloat16/float16 gets its input in
    that type (faster than autocast on CPU, see ``Predictor``). For a 2D configuration pass
    its 2D ``patch_size`` and the plan's ``slice_axis``. ``mirror_axes`` (spatial axes 0-2)
    enables test-time mirroring; ``amp`` runs a float32 network under autocast where the
    hardware has it (see :func:`autocast_dtype`). ``mirrors`` overrides ``mirror_axes``
    with an explicit list of mirrorings (each a tuple of spatial axes, ``()`` for none)
    whose logits are averaged, e.g. ``[(0, 2)]`` for one member of the mirror ensemble.
    The result is float32, or float16 for large volumes (see :func:`choose_accumulator`);
    it is always a CPU array. ``progress`` is called with the number of windows done
    after every batch.
    """
    device = torch.device(device)
    tensor = _as_tensor(image)
    patch = _patch_for(patch_size, slice_axis)
    shape = tuple(tensor.shape[1:])
    pads = _padding(shape, patch)
    if any(before or after for before, after in pads):
        flat = [v for pair in reversed(pads) for v in pair]  # F.pad lists the last axis first
        tensor = torch.nn.functional.pad(tensor, flat)
    padded = tuple(tensor.shape[1:])

    grid = window_grid(padded, patch, overlap)
    axis_weights = [
        [torch.from_numpy(w).float() for w in normalized_axis_weights(n, p, starts, sigma_scale)]
        for n, p, starts in zip(padded, patch, grid, strict=True)
    ]
    windows = list(itertools.product(*[range(len(starts)) for starts in grid]))
    flips = _flip_sets(mirror_axes, patch) if mirrors is None else _as_dims(mirrors)

    acc: torch.Tensor | None = None
    for chunk in _batches(windows, batch_size):
        slices = [
            tuple(slice(grid[a][i], grid[a][i] + patch[a]) for a, i in enumerate(idx))
            for idx in chunk
        ]
        batch = torch.stack([tensor[(slice(None), *sl)] for sl in slices]).to(device)
        logits = _predict_logits(network, batch, flips, slice_axis, amp)
        if acc is None:
            accumulator = accumulator or choose_accumulator(logits.shape[1], padded, device)
            acc = accumulator.zeros((logits.shape[1], *padded))
        for b, (idx, sl) in enumerate(zip(chunk, slices, strict=True)):
            w = _window_weight(axis_weights, idx, logits.device)
            acc[(slice(None), *sl)] += (logits[b] * w).to(acc.device, acc.dtype)
        if progress is not None:
            progress(len(chunk))
    assert acc is not None
    crop = tuple(slice(before, before + s) for (before, _), s in zip(pads, shape, strict=True))
    acc = acc[(slice(None), *crop)].contiguous()  # a no-op copy unless padded
    _softmax_inplace(acc)
    return acc.cpu().numpy()


def count_windows(
    shape: Sequence[int], patch_size: Sequence[int], overlap: float = 0.5,
    slice_axis: int | None = None,
) -> int:
    """Windows :func:`predict_probabilities` runs over an image of spatial ``shape``."""
    patch = _patch_for(patch_size, slice_axis)
    padded = [max(s, p) for s, p in zip(shape, patch, strict=True)]
    return math.prod(len(starts) for starts in window_grid(padded, patch, overlap))


def _window_weight(
    axis_weights: Sequence[Sequence[torch.Tensor]], idx: Sequence[int], device: torch.device
) -> torch.Tensor:
    """Outer product of the per-axis normalised weights of one window."""
    wx, wy, wz = (axis_weights[a][i].to(device) for a, i in enumerate(idx))
    return wx[:, None, None] * wy[None, :, None] * wz[None, None, :]

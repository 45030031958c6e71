"""Resampling of an image batch and its label batch under per-sample affine maps.

Output voxel ``o`` of sample ``k`` reads the source at ``M_k (o - c) + c (+ offsets)``, ``c``
the grid centre: bi-/trilinear interpolation for the image, nearest neighbour for the
label, zero outside, as ``F.grid_sample(..., padding_mode="zeros", align_corners=False)``.
The sampling grid is computed once for image and label, straight from the matrices (no
intermediate coordinate volume), and 3D volumes go through torch's 2D kernel, which is
vectorised on CPU where the 3D one is not. The volume is laid out as a 2D image of its
(axis 0, axis 1) rows, each axis-0 slab followed by two empty rows so that nothing bleeds
from one slab into the next; trilinear is then a bilinear lookup of slab ``floor(z)`` and
of the next (two channels of one call) blended along axis 0, and nearest picks the closer
of the two. Coordinates outside the volume are clamped onto the empty padding, which reads
as zero. Measured on 40x56x40 patches, one thread: ~0.75 ms for image + label, where 3D
``grid_sample`` takes 2.7-3.0 ms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def axis_coordinate(
    matrices: torch.Tensor, shape: tuple[int, ...], axis: int, scale: float = 1.0,
    shift: float = 0.0, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``scale * x + shift`` for the source coordinate ``x`` along ``axis`` of every output
    voxel, (K, *shape), for K (d, d) matrices (``x = c + sum_b M[axis, b] (o_b - c_b)``).

    Built from broadcast per-axis terms, so only the last addition is full size.
    """
    k, d = matrices.shape[0], len(shape)
    centre = [(s - 1) / 2 for s in shape]
    row = matrices[:, axis] * scale

    def term(b: int) -> torch.Tensor:
        steps = torch.arange(shape[b], dtype=matrices.dtype, device=matrices.device) - centre[b]
        return row[:, b].view(k, *[1] * d) * steps.view(*[s if i == b else 1
                                                           for i, s in enumerate(shape)])

    partial = term(0) + (centre[axis] * scale + shift)
    for b in range(1, d - 1):
        partial = partial + term(b)
    return torch.add(partial, term(d - 1), out=out)


def source_coordinates(matrices: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Source voxel coordinates (K, d, *shape) of ``M (o - c) + c`` for K (d, d) matrices."""
    coords = matrices.new_empty(matrices.shape[0], len(shape), *shape)
    for axis in range(len(shape)):
        axis_coordinate(matrices, shape, axis, out=coords[:, axis])
    return coords


def _slab_layout(volume: torch.Tensor, rows_per_slab: int) -> torch.Tensor:
    """(K, C, S0, S1, S2) as float32 (K, 2C, (S0 + 2) * rows_per_slab, S2): channel block 0
    holds slabs -1 .. S0 and block 1 slabs 0 .. S0 + 1 (slabs outside the volume are empty)."""
    k, c, s0, s1, s2 = volume.shape
    layout = volume.new_zeros(k, 2, c, s0 + 2, rows_per_slab, s2, dtype=torch.float32)
    layout[:, 0, :, 1 : s0 + 1, :s1] = volume
    layout[:, 1, :, :s0, :s1] = volume
    return layout.view(k, 2 * c, (s0 + 2) * rows_per_slab, s2)


def _resample_2d(
    image: torch.Tensor, label: torch.Tensor, matrices: torch.Tensor,
    offsets: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    k, _, h, w = image.shape
    grid = image.new_empty(k, h, w, 2)
    for axis, size, channel in ((0, h, 1), (1, w, 0)):  # grid x is axis 1, y axis 0
        axis_coordinate(matrices, (h, w), axis, 2 / size, 1 / size - 1, out=grid[..., channel])
        if offsets is not None:
            grid[..., channel].add_(offsets[:, axis], alpha=2 / size)
    out_image = F.grid_sample(image, grid, mode="bilinear", align_corners=False)
    out_label = F.grid_sample(label.float(), grid, mode="nearest", align_corners=False)
    return out_image, out_label.to(label.dtype)


def resample(
    image: torch.Tensor, label: torch.Tensor, matrices: torch.Tensor,
    offsets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image (K, C, *shape) resampled bi-/trilinearly and integer label (K, 1, *shape) by
    nearest neighbour at ``M_k (o - c) + c + offsets``, for (K, d, d) voxel-space matrices
    and optional (K, d, *shape) voxel offsets; zero outside."""
    matrices = matrices.to(image.device, torch.float32)
    if image.ndim == 4:
        return _resample_2d(image, label, matrices, offsets)
    k, c, s0, s1, s2 = image.shape
    shape, per_slab = (s0, s1, s2), s1 + 2
    n_rows = (s0 + 2) * per_slab

    def coordinate(axis: int) -> torch.Tensor:
        x = axis_coordinate(matrices, shape, axis)
        return x if offsets is None else x.add_(offsets[:, axis])

    frac = coordinate(0).clamp_(-1, s0)
    z0 = frac.floor()
    frac.sub_(z0)
    rows = coordinate(1).clamp_(-1.5, s1 + 0.5).add_(z0, alpha=per_slab)  # slab z0 + 1 ...
    grid = image.new_empty(k, s0, s1, s2, 2)
    torch.mul(rows, 2 / n_rows, out=grid[..., 1]).add_((2 * per_slab + 1) / n_rows - 1)  # ... here
    axis_coordinate(matrices, shape, 2, 2 / s2, 1 / s2 - 1, out=grid[..., 0])
    if offsets is not None:
        grid[..., 0].add_(offsets[:, 2], alpha=2 / s2)
    grid = grid.view(k, s0 * s1, s2, 2)
    low, high = F.grid_sample(_slab_layout(image, per_slab), grid, mode="bilinear",
                              align_corners=False).view(k, 2, c, *shape).unbind(1)
    near = F.grid_sample(_slab_layout(label, per_slab), grid, mode="nearest",
                         align_corners=False).view(k, 2, *shape)
    frac = frac.unsqueeze(1)
    # the closer slab's label (a lerp with weight 0 or 1 is exact; torch.where is 10x slower)
    out_label = torch.lerp(near[:, :1], near[:, 1:], frac.round())
    return torch.lerp(low, high, frac), out_label.to(label.dtype)

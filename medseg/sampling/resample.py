"""Resampling of an image batch and its label batch at given source voxel coordinates.

Equivalent to ``F.grid_sample(..., padding_mode="zeros", align_corners=False)`` with
bi-/trilinear interpolation for the image and nearest neighbour for the label, but the
sampling grid is computed once for both, and 3D volumes go through torch's 2D kernel,
which is vectorised on CPU where the 3D one is not. The volume is laid out as a 2D image
of its (axis 0, axis 1) rows, each axis-0 slab followed by two empty rows so that nothing
bleeds from one slab into the next; trilinear is then a bilinear lookup of slab
``floor(z)`` and of the next (two channels of one call) blended along axis 0, and nearest
picks the closer of the two. Coordinates outside the volume are clamped onto the empty
padding, which reads as zero. Measured on 40x56x40 patches, one thread: ~1.0 ms instead
of 2.7-3.0 ms for image + label (grid included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def source_coordinates(matrices: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Source voxel coordinates (K, d, *shape) of ``src = M (o - c) + c`` about the centre
    ``c`` of the grid, for K (d, d) voxel-space matrices ``M``.

    Built from broadcast per-axis terms, so only the last addition is full size.
    """
    k, d = matrices.shape[0], len(shape)
    centre = [(s - 1) / 2 for s in shape]
    axes = [
        (torch.arange(s, dtype=matrices.dtype, device=matrices.device) - centre[a])
        .view(1, *[s if i == a else 1 for i in range(d)])
        for a, s in enumerate(shape)
    ]
    coords = torch.empty(k, d, *shape, dtype=matrices.dtype, device=matrices.device)
    for a in range(d):
        total = centre[a] + matrices[:, a, 0].view(k, *[1] * d) * axes[0]
        for b in range(1, d):
            total = total + matrices[:, a, b].view(k, *[1] * d) * axes[b]
        coords[:, a] = total
    return coords


def _grid(rows: torch.Tensor, n_rows: int, cols: torch.Tensor, n_cols: int) -> torch.Tensor:
    """(K, H, W, 2) ``grid_sample`` grid (align_corners=False units) of (K, ...) pixel rows
    and columns; written in place, as ``torch.stack`` on the last axis is slow on CPU."""
    grid = rows.new_empty(*rows.shape, 2)
    torch.mul(cols, 2 / n_cols, out=grid[..., 0]).add_(1 / n_cols - 1)
    torch.mul(rows, 2 / n_rows, out=grid[..., 1]).add_(1 / n_rows - 1)
    return grid.view(rows.shape[0], -1, n_cols, 2)


def _slab_layout(volume: torch.Tensor, rows_per_slab: int) -> torch.Tensor:
    """(K, C, S0, S1, S2) as (K, 2C, (S0 + 2) * rows_per_slab, S2): channel block 0 holds
    slabs -1 .. S0 and block 1 slabs 0 .. S0 + 1 (slabs outside the volume are empty)."""
    k, c, s0, s1, s2 = volume.shape
    layout = volume.new_zeros(k, 2, c, s0 + 2, rows_per_slab, s2)
    layout[:, 0, :, 1 : s0 + 1, :s1] = volume
    layout[:, 1, :, :s0, :s1] = volume
    return layout.view(k, 2 * c, (s0 + 2) * rows_per_slab, s2)


def resample(
    image: torch.Tensor, label: torch.Tensor, coords: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image (K, C, *shape) resampled bi-/trilinearly and integer label (K, 1, *shape) by
    nearest neighbour at source voxel coordinates ``coords`` (K, d, *shape); zero outside."""
    k, c, *shape = image.shape
    labels = label.float()
    if len(shape) == 2:
        grid = _grid(coords[:, 0], shape[0], coords[:, 1], shape[1])
        out_image = F.grid_sample(image, grid, mode="bilinear", align_corners=False)
        out_label = F.grid_sample(labels, grid, mode="nearest", align_corners=False)
        return out_image, out_label.to(label.dtype)
    s0, s1, s2 = shape
    per_slab = s1 + 2
    z = coords[:, 0].clamp(-1, s0)
    z0 = z.floor()
    frac = z.sub_(z0)
    rows = coords[:, 1].clamp(-1.5, s1 + 0.5).add_(z0.add_(1), alpha=per_slab)
    grid = _grid(rows, (s0 + 2) * per_slab, coords[:, 2], s2)
    low, high = F.grid_sample(_slab_layout(image, per_slab), grid, mode="bilinear",
                              align_corners=False).view(k, 2, c, *shape).unbind(1)
    near = F.grid_sample(_slab_layout(labels, per_slab), grid, mode="nearest",
                         align_corners=False).view(k, 2, *shape)
    frac = frac.unsqueeze(1)
    out_image = low.add_(high.sub_(low).mul_(frac))
    out_label = torch.where(frac >= 0.5, near[:, 1:], near[:, :1])
    return out_image, out_label.to(label.dtype)

"""Batched data augmentation on torch tensors (CPU or GPU), deterministic given a generator.

Spatial: mirroring, rotation + scaling (one ``grid_sample`` for the whole batch, label
resampled with nearest neighbour) and optional elastic deformation. Intensity: brightness,
contrast, gamma, Gaussian noise and Gaussian blur. Each transform hits a random subset of
the batch with its probability, as in nnU-Net. Works for 2D ``(B, C, H, W)`` and 3D
``(B, C, X, Y, Z)`` batches alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentSettings:
    """Probabilities (per sample) and ranges of every augmentation."""

    mirror_axes: tuple[int, ...] = (0, 1, 2)
    p_rotate: float = 0.2
    max_rotation_degrees: float = 30.0
    p_scale: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)
    p_elastic: float = 0.0
    elastic_magnitude: float = 0.05  # displacement, as a fraction of the patch half-size
    p_brightness: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    p_gamma: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    p_noise: float = 0.1
    noise_std_max: float = 0.3
    p_blur: float = 0.2
    blur_sigma_range: tuple[float, float] = (0.5, 1.0)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _chosen(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    """Boolean mask: which of ``n`` samples get a transform of probability ``p``."""
    return torch.rand(n, generator=g) < p


def _rotation(angles: torch.Tensor, ndim: int) -> torch.Tensor:
    """(ndim, ndim) rotation from one angle (2D) or three Euler angles (3D)."""
    if ndim == 2:
        c, s = math.cos(angles[0]), math.sin(angles[0])
        return torch.tensor([[c, -s], [s, c]])
    rot = torch.eye(3)
    for axis, angle in enumerate(angles.tolist()):
        c, s = math.cos(angle), math.sin(angle)
        i, j = [a for a in range(3) if a != axis]
        r = torch.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rot = r @ rot
    return rot


def spatial_matrices(
    n: int, shape: tuple[int, ...], settings: AugmentSettings, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``affine_grid`` matrices (B, d, d+1) and a mask of non-identity samples.

    Rotation and scaling act in voxel units (isotropic even for non-cubic patches); the
    matrix is converted to ``affine_grid``'s normalised, reversed-axis coordinates.
    """
    ndim = len(shape)
    rotate = _chosen(n, settings.p_rotate, g)
    scale = _chosen(n, settings.p_scale, g)
    max_angle = math.radians(settings.max_rotation_degrees)
    angles = _uniform(n * 3, -max_angle, max_angle, g).reshape(n, 3)
    factors = _uniform(n, *settings.scale_range, g)
    half = torch.tensor(shape, dtype=torch.float32) / 2
    flip = torch.arange(ndim - 1, -1, -1)  # affine_grid orders coordinates (W, H, D)
    mats = torch.zeros(n, ndim, ndim + 1)
    for b in range(n):
        m = _rotation(angles[b], ndim) if rotate[b] else torch.eye(ndim)
        if scale[b]:
            m = m * factors[b]
        m = torch.diag(1 / half) @ m @ torch.diag(half)  # voxel units -> normalised units
        mats[b, :, :ndim] = m[flip][:, flip]
    return mats, rotate | scale


def affine_grid(theta: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``F.affine_grid(theta, (N, 1, *shape), align_corners=False)`` by broadcasting.

    Each output coordinate is a sum of per-axis 1D terms, which is ~4x faster on CPU than
    torch's batched matrix product over every voxel (measured on 40x56x40 patches).
    """
    n, d = theta.shape[0], len(shape)
    ones = [1] * d
    axes = [
        ((torch.arange(size, dtype=theta.dtype, device=theta.device) * 2 + 1) / size - 1)
        .view(*[size if i == a else 1 for i in range(d)])
        for a, size in enumerate(shape)
    ][::-1]  # grid coordinates are ordered (x, y, z) = last array axis first
    grid = torch.empty(n, *shape, d, dtype=theta.dtype, device=theta.device)
    for k in range(d):
        component = theta[:, k, d].view(n, *ones).expand(n, *shape).clone()
        for j in range(d):
            component += theta[:, k, j].view(n, *ones) * axes[j]
        grid[..., k] = component
    return grid


def _elastic_offsets(
    n: int, shape: tuple[int, ...], magnitude: float, g: torch.Generator
) -> torch.Tensor:
    """Smooth random displacement fields (B, *shape, d): coarse noise, upsampled."""
    coarse = [max(s // 8, 2) for s in shape]
    noise = torch.randn(n, len(shape), *coarse, generator=g) * magnitude
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    field = F.interpolate(noise, size=shape, mode=mode, align_corners=False)
    return field.movedim(1, -1)


def augment_spatial(
    image: torch.Tensor, label: torch.Tensor, settings: AugmentSettings, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate/scale/deform (one resampling) then mirror a batch and its label map.

    Only the samples drawn for a transform are touched; the inputs are not modified.
    """
    n, shape = image.shape[0], tuple(image.shape[2:])
    image, label = image.clone(), label.clone()
    mats, moved = spatial_matrices(n, shape, settings, g)
    elastic = _chosen(n, settings.p_elastic, g)
    idx = _indices(moved | elastic)
    if len(idx):
        grid = affine_grid(mats[idx].to(image.device), shape)
        if elastic.any():
            offsets = _elastic_offsets(len(idx), shape, settings.elastic_magnitude, g)
            grid = grid + offsets.to(grid.device) * elastic[idx].view(-1, *[1] * (len(shape) + 1))
        image[idx] = F.grid_sample(image[idx], grid, mode="bilinear", align_corners=False)
        label[idx] = F.grid_sample(
            label[idx].float(), grid, mode="nearest", align_corners=False
        ).to(label.dtype)
    for axis in settings.mirror_axes:
        flip = _indices(_chosen(n, 0.5, g))
        if axis < len(shape) and len(flip):
            image[flip] = image[flip].flip(axis + 2)
            label[flip] = label[flip].flip(axis + 2)
    return image, label


def _indices(mask: torch.Tensor) -> list[int]:
    return mask.nonzero().flatten().tolist()


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of one (C, ...) sample (1D convolutions along each axis)."""
    radius = max(math.ceil(3 * sigma), 1)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    out = x
    for axis in range(1, x.ndim):
        moved = out.movedim(axis, -1)
        rows = moved.reshape(-1, 1, moved.shape[-1])
        out = F.conv1d(rows, kernel, padding=radius).reshape(moved.shape).movedim(-1, axis)
    return out


def _brightness(x: torch.Tensor, factor: float) -> torch.Tensor:
    return x * factor


def _contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale around the mean, clipped to the original range (nnU-Net's preserve_range)."""
    mean = x.mean()
    return ((x - mean) * factor + mean).clamp(float(x.min()), float(x.max()))


def _gamma(x: torch.Tensor, exponent: float) -> torch.Tensor:
    """Gamma on the [0, 1]-rescaled sample, keeping its mean and standard deviation."""
    lo, hi = x.min(), x.max()
    span = (hi - lo).clamp_min(1e-6)
    out = ((x - lo) / span) ** exponent
    return (out - out.mean()) / out.std().clamp_min(1e-6) * x.std() + x.mean()


def _noise(x: torch.Tensor, std: float, g: torch.Generator) -> torch.Tensor:
    return x + torch.randn(x.shape, generator=g).to(x.device) * std


def augment_intensity(
    image: torch.Tensor, settings: AugmentSettings, g: torch.Generator
) -> torch.Tensor:
    """Brightness, contrast, gamma, noise and blur, each on a random subset of the batch.

    Draws are made for every sample (so a sample's draws do not depend on the others);
    only the chosen samples are computed.
    """
    n = image.shape[0]
    image = image.clone()
    steps = [
        (settings.p_brightness, settings.brightness_range, _brightness),
        (settings.p_contrast, settings.contrast_range, _contrast),
        (settings.p_gamma, settings.gamma_range, _gamma),
        (settings.p_noise, (0.0, settings.noise_std_max), None),
        (settings.p_blur, settings.blur_sigma_range, _gaussian_blur),
    ]
    for p, value_range, op in steps:
        chosen = _indices(_chosen(n, p, g))
        values = _uniform(n, *value_range, g)
        for b in chosen:
            value = float(values[b])
            image[b] = _noise(image[b], value, g) if op is None else op(image[b], value)
    return image


def augment_batch(
    image: torch.Tensor, label: torch.Tensor, settings: AugmentSettings, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a float image batch and its integer label batch; same seed, same result."""
    g = torch.Generator().manual_seed(seed)
    image, label = augment_spatial(image, label, settings, g)
    return augment_intensity(image, settings, g), label

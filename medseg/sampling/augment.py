"""Batched data augmentation on torch tensors, deterministic given a seed.

Spatial: mirroring, rotation + scaling and optional elastic deformation (one resampling
of the moved samples, image and label from the same grid, see ``resample``). Intensity:
brightness, contrast, gamma, Gaussian noise and Gaussian blur. Each transform hits a
random subset of the batch with its probability, as in nnU-Net. Works for 2D
``(B, C, H, W)`` and 3D ``(B, C, X, Y, Z)`` batches alike, on CPU (where the loader's
workers run it) or GPU.

All random parameters of a batch are drawn first, with numpy (:func:`draw_spatial`,
:func:`draw_intensity`), then applied in place to the batch (``apply_*_``); the loader
augments the batch it has just cut, so nothing is copied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medseg.sampling.resample import resample


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
    # Voxel size of the patch grid (mm): rotations and scalings act in physical space, so
    # anisotropic voxels are not sheared (None: isotropic voxels).
    spacing: tuple[float, ...] | None = None
    # Spatial axes rotated about (3D): all three, or only the through-plane axis of
    # anisotropic data ("in-plane" rotation, which also scales in-plane only).
    rotation_axes: tuple[int, ...] = (0, 1, 2)

    @classmethod
    def for_configuration(cls, spacing: tuple[float, ...], rotation: str, **changes: object
                          ) -> AugmentSettings:
        """nnU-Net's augmentation for a plan configuration of this ``spacing`` (2 or 3
        axes) and ``rotation`` ("3d" or "in-plane": about the coarsest axis only)."""
        axes = (int(np.argmax(spacing)),) if rotation == "in-plane" and len(spacing) == 3 \
            else (0, 1, 2)
        return cls(spacing=tuple(float(s) for s in spacing), rotation_axes=axes,
                   **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SpatialDraws:
    """The spatial parameters of one batch: per-sample voxel-space matrices about the patch
    centre (rotation, scaling and mirroring), which samples are resampled (rotated, scaled
    or deformed), which are deformed, and the mirrored axes of every sample."""

    matrices: np.ndarray  # (B, d, d)
    resampled: np.ndarray  # (B,) bool
    elastic: np.ndarray  # (B,) bool
    mirrored: tuple[tuple[int, ...], ...]  # spatial axes, per sample


@dataclass(frozen=True)
class IntensityDraws:
    """Per transform (brightness, contrast, gamma, noise, blur): the chosen samples and a
    value drawn for every sample."""

    chosen: dict[str, np.ndarray]  # (B,) bool
    values: dict[str, np.ndarray]  # (B,)


def rotation_matrix(angles: np.ndarray, ndim: int) -> np.ndarray:
    """(ndim, ndim) rotation from one angle (2D) or three Euler angles about axes 0, 1, 2
    applied in that order (3D)."""
    if ndim == 2:
        c, s = math.cos(angles[0]), math.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    rot = np.eye(3)
    for axis, angle in enumerate(angles[:3]):
        c, s = math.cos(angle), math.sin(angle)
        i, j = [a for a in range(3) if a != axis]
        step = np.eye(3)
        step[i, i], step[i, j], step[j, i], step[j, j] = c, -s, s, c
        rot = step @ rot
    return rot


def draw_spatial(
    n: int, ndim: int, settings: AugmentSettings, rng: np.random.Generator
) -> SpatialDraws:
    """Spatial parameters of a batch of ``n`` samples. Every sample gets every draw, so its
    parameters do not depend on the others'. Rotation and scaling act in voxel units
    (isotropic even for non-cubic patches); mirroring is applied after them."""
    rotate = rng.random(n) < settings.p_rotate
    scale = rng.random(n) < settings.p_scale
    elastic = rng.random(n) < settings.p_elastic
    max_angle = math.radians(settings.max_rotation_degrees)
    angles = rng.uniform(-max_angle, max_angle, (n, 3))
    factors = np.where(scale, rng.uniform(*settings.scale_range, n), 1.0)
    flips = rng.random((n, len(settings.mirror_axes))) < 0.5
    signs = np.ones((n, ndim))
    for j, axis in enumerate(settings.mirror_axes):
        if axis < ndim:
            signs[flips[:, j], axis] = -1
    if ndim == 3:
        angles[:, [a for a in range(3) if a not in settings.rotation_axes]] = 0.0
    rotations = np.stack([rotation_matrix(angles[b], ndim) if rotate[b] else np.eye(ndim)
                          for b in range(n)])
    if settings.spacing is not None and len(settings.spacing) == ndim:
        # a rotation R in millimetres is S^-1 R S in voxels (S = diag(spacing))
        s = np.asarray(settings.spacing, dtype=np.float64)
        rotations = rotations * s[None, None, :] / s[None, :, None]
    scales = np.repeat(factors[:, None], ndim, axis=1)
    if ndim == 3 and len(settings.rotation_axes) == 1:  # in-plane: keep the slice axis
        scales[:, settings.rotation_axes[0]] = 1.0
    # src = M F (o - c) + c with F = diag(signs): mirroring after the transform
    matrices = rotations * scales[:, None, :] * signs[:, None, :]
    mirrored = tuple(tuple(int(a) for a in np.flatnonzero(signs[b] < 0)) for b in range(n))
    return SpatialDraws(matrices, rotate | scale | elastic, elastic, mirrored)


def _elastic_offsets(
    n: int, shape: tuple[int, ...], magnitude: float, g: torch.Generator
) -> torch.Tensor:
    """Smooth random displacement fields (B, d, *shape) in voxels: coarse noise, upsampled;
    ``magnitude`` is a fraction of the patch half-size along each axis."""
    coarse = [max(s // 8, 2) for s in shape]
    noise = torch.randn(n, len(shape), *coarse, generator=g) * magnitude
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    field = F.interpolate(noise, size=shape, mode=mode, align_corners=False)
    half = torch.tensor(shape, dtype=field.dtype) / 2
    return field * half.view(1, -1, *[1] * len(shape))


def apply_spatial_(
    image: torch.Tensor, label: torch.Tensor, draws: SpatialDraws, settings: AugmentSettings,
    g: torch.Generator,
) -> None:
    """Apply ``draws`` to a batch and its label map in place: the resampled samples in one
    resampling (mirroring folded into their matrices), the others only flipped."""
    shape = tuple(image.shape[2:])
    idx = np.flatnonzero(draws.resampled)
    if idx.size:
        rows = torch.from_numpy(idx).to(image.device)
        deformed = draws.elastic[idx]
        offsets = None
        if deformed.any():
            offsets = _elastic_offsets(len(idx), shape, settings.elastic_magnitude, g)
            weight = torch.from_numpy(deformed).to(offsets).view(-1, *[1] * (len(shape) + 1))
            offsets = (offsets * weight).to(image.device)
        moved_image, moved_label = resample(
            image.index_select(0, rows), label.index_select(0, rows),
            torch.from_numpy(draws.matrices[idx]), offsets)
        for j, b in enumerate(idx):
            image[b], label[b] = moved_image[j], moved_label[j]
    for b in np.flatnonzero(~draws.resampled):
        dims = [a + 1 for a in draws.mirrored[b]]
        if dims:
            image[b], label[b] = image[b].flip(dims), label[b].flip(dims)


def _mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) standard deviation of all values; a dot product of the centred
    values is several times faster than ``torch.std`` on CPU."""
    flat = x.reshape(-1)
    mean = flat.mean()
    centred = flat - mean
    return mean, (torch.dot(centred, centred) / max(flat.numel() - 1, 1)).sqrt()


def gaussian_kernel(sigma: float) -> list[float]:
    """Normalised 1D Gaussian weights of radius ``ceil(3 sigma)`` (at least 1), centre first
    then offsets 1, 2, ...: the kernel is symmetric."""
    radius = max(math.ceil(3 * sigma), 1)
    weights = [math.exp(-0.5 * (d / sigma) ** 2) for d in range(radius + 1)]
    total = weights[0] + 2 * sum(weights[1:])
    return [w / total for w in weights]


def gaussian_blur_(x: torch.Tensor, sigma: float, g: torch.Generator) -> None:
    """Separable Gaussian blur of one (C, ...) sample along its spatial axes, zero outside
    (as ``scipy.ndimage.gaussian_filter(mode="constant")``), by shifted in-place additions:
    0.25 ms per 40x56x40 patch on one CPU thread, where scipy takes 0.6 ms and torch's
    convolutions several ms; runs on the GPU too."""
    centre, *side = gaussian_kernel(sigma)
    for axis in range(1, x.ndim):
        source, n = x.clone(), x.shape[axis]
        x.mul_(centre)
        for shift, weight in enumerate(side[: n - 1], start=1):
            x.narrow(axis, shift, n - shift).add_(source.narrow(axis, 0, n - shift), alpha=weight)
            x.narrow(axis, 0, n - shift).add_(source.narrow(axis, shift, n - shift), alpha=weight)


def _brightness_(x: torch.Tensor, factor: float, g: torch.Generator) -> None:
    x.mul_(factor)


def _contrast_(x: torch.Tensor, factor: float, g: torch.Generator) -> None:
    """Scale each channel around its mean, clipped to its original range (nnU-Net's
    preserve_range): channels of different modalities keep their own statistics."""
    for channel in x:
        lo, hi = torch.aminmax(channel)
        mean = channel.mean()
        channel.sub_(mean).mul_(factor).add_(mean).clamp_(lo, hi)


def _gamma_(x: torch.Tensor, exponent: float, g: torch.Generator) -> None:
    """Gamma on each [0, 1]-rescaled channel, keeping the channel's mean and standard
    deviation."""
    for channel in x:
        lo, hi = torch.aminmax(channel)
        mean, std = _mean_std(channel)
        channel.sub_(lo).div_((hi - lo).clamp_min(1e-6)).pow_(exponent)
        new_mean, new_std = _mean_std(channel)
        channel.sub_(new_mean).mul_(std / new_std.clamp_min(1e-6)).add_(mean)


def _noise_(x: torch.Tensor, std: float, g: torch.Generator) -> None:
    x.add_(torch.randn(x.shape, generator=g).to(x.device), alpha=std)


INTENSITY_STEPS = {
    "brightness": _brightness_, "contrast": _contrast_, "gamma": _gamma_, "noise": _noise_,
    "blur": gaussian_blur_,
}


def draw_intensity(n: int, settings: AugmentSettings, rng: np.random.Generator
                   ) -> IntensityDraws:
    """Which samples get each intensity transform, and its value for every sample."""
    ranges = {
        "brightness": (settings.p_brightness, settings.brightness_range),
        "contrast": (settings.p_contrast, settings.contrast_range),
        "gamma": (settings.p_gamma, settings.gamma_range),
        "noise": (settings.p_noise, (0.0, settings.noise_std_max)),
        "blur": (settings.p_blur, settings.blur_sigma_range),
    }
    chosen, values = {}, {}
    for name, (p, (lo, hi)) in ranges.items():
        chosen[name] = rng.random(n) < p
        values[name] = rng.uniform(lo, hi, n)
    return IntensityDraws(chosen, values)


def apply_intensity_(image: torch.Tensor, draws: IntensityDraws, g: torch.Generator) -> None:
    """Apply ``draws`` in place, in the order brightness, contrast, gamma, noise, blur;
    only the chosen samples are computed."""
    for name, step in INTENSITY_STEPS.items():
        for b in np.flatnonzero(draws.chosen[name]):
            step(image[b], float(draws.values[name][b]), g)


def augment_batch_(
    image: torch.Tensor, label: torch.Tensor, settings: AugmentSettings, seed: int
) -> None:
    """Augment a float image batch and its integer label batch in place; same seed, same
    result."""
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(int(rng.integers(2**62)))
    n = image.shape[0]
    apply_spatial_(image, label, draw_spatial(n, image.ndim - 2, settings, rng), settings, g)
    apply_intensity_(image, draw_intensity(n, settings, rng), g)


def augment_batch(
    image: torch.Tensor, label: torch.Tensor, settings: AugmentSettings, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a copy of a float image batch and its integer label batch; same seed, same
    result. The inputs are not modified."""
    image, label = image.clone(), label.clone()
    augment_batch_(image, label, settings, seed)
    return image, label

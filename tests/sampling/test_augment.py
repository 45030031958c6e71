"""Batched augmentation: deterministic, label-consistent, identity when switched off."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from medseg.sampling.augment import (
    INTENSITY_STEPS,
    AugmentSettings,
    augment_batch,
    augment_batch_,
    gaussian_blur_,
)
from tests.conftest import sphere_label

OFF = AugmentSettings(mirror_axes=(), p_rotate=0, p_scale=0, p_brightness=0, p_contrast=0,
                      p_gamma=0, p_noise=0, p_blur=0)


def batch(n: int = 4, shape: tuple[int, ...] = (16, 20, 12)) -> tuple[torch.Tensor, torch.Tensor]:
    lab = torch.from_numpy(sphere_label(shape, radius=4).astype(np.int64))
    lab[: shape[0] // 2][lab[: shape[0] // 2] > 0] = 2
    label = lab[None, None].repeat(n, 1, *[1] * len(shape))
    return label.float() + 0.01 * torch.randn(label.shape), label


def test_same_seed_same_result_and_different_seed_differs() -> None:
    image, label = batch()
    a = augment_batch(image, label, AugmentSettings(p_elastic=0.5), seed=3)
    b = augment_batch(image, label, AugmentSettings(p_elastic=0.5), seed=3)
    c = augment_batch(image, label, AugmentSettings(p_elastic=0.5), seed=4)
    torch.testing.assert_close(a[0], b[0])
    assert torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])


def test_everything_off_is_identity() -> None:
    image, label = batch()
    out_image, out_label = augment_batch(image, label, OFF, seed=0)
    torch.testing.assert_close(out_image, image)
    assert torch.equal(out_label, label)


def test_mirroring_moves_image_and_label_together() -> None:
    image, label = batch(n=16)
    settings = AugmentSettings(**{**OFF.__dict__, "mirror_axes": (0, 1, 2)})
    out_image, out_label = augment_batch(image, label, settings, seed=1)
    assert torch.allclose(out_image.round(), out_label.float())
    assert not torch.equal(out_label, label)  # some sample was flipped


def test_spatial_transforms_keep_labels_valid_and_roughly_aligned() -> None:
    image, label = batch(n=8)
    settings = AugmentSettings(p_rotate=1, p_scale=1, p_elastic=1, p_brightness=0,
                               p_contrast=0, p_gamma=0, p_noise=0, p_blur=0)
    out_image, out_label = augment_batch(image, label, settings, seed=2)
    assert out_label.dtype == label.dtype and set(out_label.unique().tolist()) <= {0, 1, 2}
    agreement = (out_image.round().long() == out_label).float().mean()
    assert agreement > 0.97  # image (bilinear) and label (nearest) moved the same way


def test_2d_batches_work() -> None:
    image, label = batch(n=6, shape=(20, 24))
    out_image, out_label = augment_batch(image, label, AugmentSettings(p_rotate=1), seed=0)
    assert out_image.shape == image.shape and out_label.shape == label.shape


def test_intensity_transforms_change_only_the_image() -> None:
    image, label = batch()
    settings = AugmentSettings(mirror_axes=(), p_rotate=0, p_scale=0, p_brightness=1,
                               p_contrast=1, p_gamma=1, p_noise=1, p_blur=1)
    out_image, out_label = augment_batch(image, label, settings, seed=0)
    assert torch.equal(out_label, label) and not torch.allclose(out_image, image)
    assert torch.isfinite(out_image).all()


@pytest.mark.parametrize("sigma", [0.5, 0.8, 1.0, 2.0])
@pytest.mark.parametrize("shape", [(1, 12, 9, 7), (2, 3, 5, 2), (1, 20, 24)])
def test_blur_matches_scipy_gaussian_filter_with_zeros_outside(
    sigma: float, shape: tuple[int, ...]
) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    expected = ndimage.gaussian_filter(x.numpy(), sigma, mode="constant",
                                       radius=max(math.ceil(3 * sigma), 1),
                                       axes=tuple(range(1, x.ndim)))
    gaussian_blur_(x, sigma, torch.Generator())
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-5)


def test_gamma_keeps_mean_and_standard_deviation() -> None:
    x = torch.rand(1, 10, 12, 8, generator=torch.Generator().manual_seed(1)) * 3 - 1
    mean, std = x.mean(), x.std()
    INTENSITY_STEPS["gamma"](x, 1.4, torch.Generator())
    torch.testing.assert_close(x.mean(), mean, atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(), std, atol=1e-4, rtol=0)


def test_in_place_augmentation_equals_the_copying_one() -> None:
    image, label = batch()
    expected = augment_batch(image, label, AugmentSettings(p_rotate=0.5), seed=9)
    augment_batch_(image, label, AugmentSettings(p_rotate=0.5), seed=9)
    torch.testing.assert_close(image, expected[0])
    assert torch.equal(label, expected[1])


def _rotate_only(**changes) -> AugmentSettings:
    from dataclasses import replace

    return replace(OFF, p_rotate=1.0, max_rotation_degrees=40.0, **changes)


def test_in_plane_rotation_keeps_slices_apart() -> None:
    shape = (24, 24, 10)
    one_slice = torch.zeros(4, 1, *shape)
    one_slice[..., 4] = 1.0  # only slice 4 is bright
    label = torch.zeros(4, 1, *shape, dtype=torch.long)
    image = one_slice.clone()
    augment_batch_(image, label, _rotate_only(spacing=(0.8, 0.8, 4.0), rotation_axes=(2,)),
                   seed=1)
    assert image[..., 4].abs().sum() > 0.5 * one_slice.sum()  # rotated, not emptied
    assert image[..., [0, 1, 2, 3, 5, 6, 7, 8, 9]].abs().max() == 0  # nothing leaks
    tilted = one_slice.clone()
    augment_batch_(tilted, label.clone(), _rotate_only(), seed=1)  # 3D: slices mix
    assert tilted[..., [0, 1, 2, 3, 5, 6, 7, 8, 9]].abs().max() > 0.1


def test_for_configuration_rotates_about_the_coarse_axis() -> None:
    s = AugmentSettings.for_configuration((0.7, 0.7, 5.0), "in-plane")
    assert s.rotation_axes == (2,) and s.spacing == (0.7, 0.7, 5.0)
    assert AugmentSettings.for_configuration((1.0, 1.0, 1.0), "3d").rotation_axes == (0, 1, 2)


def test_rotation_acts_in_millimetres_on_anisotropic_voxels() -> None:
    spacing = (1.0, 1.0, 2.0)
    shape = (32, 32, 16)  # 32 x 32 x 32 mm
    grid = np.stack(np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s
                                  for n, s in zip(shape, spacing, strict=True)],
                                indexing="ij"))
    ball = (np.sqrt((grid**2).sum(0)) <= 10).astype(np.int64)  # a 10 mm ball
    label = torch.from_numpy(ball)[None, None].repeat(4, 1, 1, 1, 1)
    image = label.float()

    def dice(result: torch.Tensor) -> float:
        inter = (result[:, 0] * label[:, 0]).sum().item()
        return 2 * inter / (result.sum().item() + label.sum().item())

    physical = label.clone()
    augment_batch_(image.clone(), physical, _rotate_only(spacing=spacing), seed=5)
    voxel = label.clone()
    augment_batch_(image.clone(), voxel, _rotate_only(), seed=5)
    assert dice(physical) > 0.95  # a ball rotated in mm is the same ball
    assert dice(voxel) < dice(physical) - 0.03  # rotated in voxel units it is distorted


def test_contrast_and_gamma_use_each_channels_own_statistics() -> None:
    g = torch.Generator().manual_seed(0)
    flair = torch.randn(1, 12, 12, 12, generator=g)
    t1c = 300 + 50 * torch.randn(1, 12, 12, 12, generator=g)  # another scale entirely
    for step in ("contrast", "gamma"):
        together = torch.cat([flair, t1c]).clone()
        INTENSITY_STEPS[step](together, 1.3, g)
        alone = flair.clone()
        INTENSITY_STEPS[step](alone, 1.3, g)
        torch.testing.assert_close(together[:1], alone)  # unaffected by the other channel
        second = t1c.clone()
        INTENSITY_STEPS[step](second, 1.3, g)
        torch.testing.assert_close(together[1:], second)

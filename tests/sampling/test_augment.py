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

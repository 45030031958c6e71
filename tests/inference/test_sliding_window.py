"""Sliding-window geometry and stitching."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.networks.nets import DynUNet

from medseg.inference.sliding_window import (
    Accumulator,
    autocast_dtype,
    gaussian_weights,
    normalized_axis_weights,
    predict_probabilities,
    window_slices,
    window_starts,
)


@settings(max_examples=200, deadline=None)
@given(
    image=st.integers(1, 300),
    patch=st.integers(1, 64),
    overlap=st.sampled_from([0.0, 0.25, 0.5, 0.7, 0.9]),
)
def test_window_starts_cover_the_axis_and_respect_overlap(image, patch, overlap):
    starts = window_starts(image, patch, overlap)
    assert starts[0] == 0
    assert starts == sorted(set(starts))
    if image <= patch:
        assert starts == [0]
        return
    assert starts[-1] + patch == image
    covered = np.zeros(image, bool)
    for s in starts:
        covered[s : s + patch] = True
    assert covered.all()
    min_overlap = math.ceil(patch * overlap - 1e-9) if patch * (1 - overlap) >= 1 else patch - 1
    for a, b in itertools.pairwise(starts):
        assert patch - (b - a) >= min_overlap


def test_window_starts_examples():
    assert window_starts(100, 40, 0.5) == [0, 20, 40, 60]
    assert window_starts(41, 40, 0.5) == [0, 1]
    assert window_starts(30, 40, 0.5) == [0]
    assert window_starts(5, 1, 0.5) == [0, 1, 2, 3, 4]


def test_window_slices_is_the_product_of_axes():
    slices = window_slices((100, 30, 41), (40, 40, 40), 0.5)
    assert len(slices) == 4 * 1 * 2
    assert slices[0] == (slice(0, 40), slice(0, 40), slice(0, 40))
    assert slices[-1] == (slice(60, 100), slice(0, 40), slice(1, 41))


@pytest.mark.parametrize("patch", [(9, 9, 9), (40, 56, 40), (1, 32, 17)])
def test_gaussian_weights_peak_sigma_and_no_zeros(patch):
    w = gaussian_weights(patch)
    assert w.shape == patch and w.dtype == np.float32
    assert w.min() > 0
    assert w.max() == pytest.approx(1.0)
    centre = tuple((p - 1) // 2 for p in patch)
    assert w[centre] == pytest.approx(w.max(), rel=0.02)
    # along the first axis of odd size 9: sigma = 9/8, value exp(-x^2 / (2 sigma^2))
    if patch[0] == 9:
        line = w[:, 4, 4]
        np.testing.assert_allclose(line, np.exp(-0.5 * ((np.arange(9) - 4) / (9 / 8)) ** 2),
                                   rtol=1e-6)


def test_normalized_axis_weights_sum_to_one_everywhere():
    starts = window_starts(50, 16, 0.5)
    per_window = normalized_axis_weights(50, 16, starts)
    total = np.zeros(50)
    for s, w in zip(starts, per_window, strict=True):
        total[s : s + 16] += w
    np.testing.assert_allclose(total, 1.0)


def _identity_3d(channels: int) -> torch.nn.Module:
    conv = torch.nn.Conv3d(channels, channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels).reshape(channels, channels, 1, 1, 1))
    return conv.eval()


def _identity_2d(channels: int) -> torch.nn.Module:
    conv = torch.nn.Conv2d(channels, channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels).reshape(channels, channels, 1, 1))
    return conv.eval()


def _image(shape, channels=3, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 2, (channels, *shape)).astype(np.float32)


@pytest.mark.parametrize("shape", [(37, 50, 35), (20, 70, 13), (8, 8, 8)])
@pytest.mark.parametrize("mirror_axes", [(), (0, 1, 2)])
def test_identity_network_is_reproduced_exactly(shape, mirror_axes):
    image = _image(shape)
    probs = predict_probabilities(_identity_3d(3), image, (16, 24, 16), overlap=0.5,
                                  batch_size=3, mirror_axes=mirror_axes, amp=False)
    expected = torch.softmax(torch.from_numpy(image), 0).numpy()
    assert probs.shape == image.shape and probs.dtype == np.float32
    np.testing.assert_allclose(probs, expected, atol=1e-5)


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_2d_network_runs_slice_by_slice(slice_axis):
    image = _image((12, 30, 21), channels=2)
    probs = predict_probabilities(_identity_2d(2), image, (16, 16), slice_axis=slice_axis,
                                  batch_size=8, mirror_axes=(0, 1, 2), amp=False)
    expected = torch.softmax(torch.from_numpy(image), 0).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_float16_accumulation_is_close_to_float32():
    image = _image((30, 40, 33))
    net = _identity_3d(3)
    full = predict_probabilities(net, image, (16, 16, 16), amp=False)
    half = predict_probabilities(net, image, (16, 16, 16), amp=False,
                                 accumulator=Accumulator(torch.device("cpu"), torch.float16))
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), full, atol=2e-3)
    assert (half.argmax(0) == full.argmax(0)).mean() > 0.999


def _dynunet() -> torch.nn.Module:
    torch.manual_seed(0)
    return DynUNet(3, 1, 3, kernel_size=[3, 3, 3], strides=[1, 2, 2], upsample_kernel_size=[2, 2],
                   filters=[4, 8, 16], deep_supervision=True, deep_supr_num=1).eval()


def test_dynunet_probabilities_are_a_distribution():
    image = _image((20, 26, 18), channels=1)
    probs = predict_probabilities(_dynunet(), image, (16, 16, 16), mirror_axes=(0,))
    assert probs.shape == (3, 20, 26, 18)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    assert probs.min() >= 0


def test_mixed_precision_agrees_with_float32():
    image = _image((20, 26, 18), channels=1)
    net = _dynunet()
    full = predict_probabilities(net, image, (16, 16, 16), amp=False)
    mixed = predict_probabilities(net, image, (16, 16, 16), amp=True)
    assert np.abs(full - mixed).max() < 0.05
    assert (full.argmax(0) == mixed.argmax(0)).mean() > 0.98


def test_autocast_dtype_per_device():
    assert autocast_dtype(torch.device("cuda")) == torch.float16
    assert autocast_dtype(torch.device("cpu")) in (torch.bfloat16, None)


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="channel-first"):
        predict_probabilities(_identity_3d(1), np.zeros((8, 8, 8), np.float32), (4, 4, 4))
    with pytest.raises(ValueError, match="3D patch"):
        predict_probabilities(_identity_3d(1), np.zeros((1, 8, 8, 8), np.float32), (4, 4))

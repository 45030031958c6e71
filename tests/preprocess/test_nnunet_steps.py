"""nnU-Net's preprocessing pieces against independent references: scikit-image's resize
(what nnU-Net calls), SimpleITK's array order, nnU-Net's window steps and Gaussian."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medseg.core import Volume
from medseg.data.nnunet import NnunetLabels
from medseg.inference.nnunet_window import nnunet_gaussian, nnunet_window_starts
from medseg.io import read_volume, write_volume
from medseg.preprocess.nnunet_plans import NnunetPlan, Resampling
from medseg.preprocess.nnunet_steps import (
    from_nnunet_axes,
    nearest_indices,
    resize,
    separate_axis,
    to_nnunet_axes,
)
from tests.conftest import make_affine


def plan(transpose=(0, 1, 2), reader="SimpleITKIO") -> NnunetPlan:
    back = tuple(int(a) for a in np.argsort(transpose))
    return NnunetPlan(
        folder=Path("x"), dataset_name="t", configuration="3d_fullres", trainer="T",
        channels={0: "MRI"}, labels=NnunetLabels({0: "bg", 1: "a"}, {}), reader=reader,
        transpose_forward=tuple(transpose), transpose_backward=back, spacing=(1.0, 1.0, 1.0),
        patch_size=(8, 8, 8), normalization=("ZScoreNormalization",), use_mask_for_norm=(False,),
        intensity_properties={}, resample_data=Resampling(3), resample_probabilities=Resampling(1),
        architecture={})


@pytest.mark.parametrize("order", [1, 3])
@pytest.mark.parametrize(("shape_in", "shape_out"), [((9, 12, 7), (13, 10, 7)),
                                                     ((16, 11), (7, 23))])
def test_resize_equals_scikit_image(order, shape_in, shape_out):
    skt = pytest.importorskip("skimage.transform")
    x = np.random.default_rng(order).normal(size=shape_in) * 50
    ref = skt.resize(x, shape_out, order, mode="edge", anti_aliasing=False)
    np.testing.assert_allclose(resize(x, shape_out, order), ref, atol=1e-9)


def test_nearest_indices_equal_ndimage_order_zero():
    from scipy import ndimage
    x = np.arange(7.0)
    for n_out in (3, 7, 10, 18):
        coords = (np.arange(n_out) + 0.5) * (7 / n_out) - 0.5
        ref = ndimage.map_coordinates(x, coords[None], order=0, mode="nearest")
        np.testing.assert_array_equal(x[nearest_indices(7, n_out)], ref)


@pytest.mark.parametrize(("current", "target", "force", "expected"), [
    ((3.0, 0.8, 0.8), (1.0, 1.0, 1.0), None, 0),       # anisotropic source
    ((1.0, 1.0, 1.0), (1.0, 1.0, 4.0), None, 2),       # anisotropic target
    ((0.24, 1.25, 1.25), (1.0, 1.0, 1.0), None, None),  # two coarse axes: not separate
    ((3.0, 0.8, 0.8), (1.0, 1.0, 1.0), False, None),
    ((2.0, 1.0, 1.0), (2.0, 1.0, 1.0), True, 0),
])
def test_separate_axis_follows_nnunets_rule(current, target, force, expected):
    assert separate_axis(current, target, Resampling(3, 0, force)) == expected


def test_window_starts_and_gaussian_equal_nnunets():
    sw = pytest.importorskip("nnunetv2.inference.sliding_window_prediction")
    assert nnunet_window_starts(110, 64, 0.5) == [0, 23, 46]  # nnU-Net's documented example
    assert nnunet_window_starts(7, 1) == list(range(7))
    for size, patch in ((110, 64), (37, 20), (20, 20), (513, 96)):
        assert [nnunet_window_starts(size, patch, 0.5)] == \
            sw.compute_steps_for_sliding_window((size,), (patch,), 0.5)
    for patch in ((20, 28, 24), (5, 64, 9), (40, 56)):
        ref = sw.compute_gaussian(patch, 1 / 8, 10, dtype=torch.float16,
                                  device=torch.device("cpu"))
        assert torch.equal(nnunet_gaussian(patch), ref)


def test_axes_are_simpleitks_and_invertible(tmp_path):
    affine = make_affine((0.7, 0.9, 2.5), "LPS", oblique_degrees=(0, 10, 0))
    array = np.random.default_rng(0).normal(size=(1, 5, 6, 7)).astype(np.float32)
    write_volume(Volume(array, affine), tmp_path / "x.nii.gz")
    volume = read_volume(tmp_path / "x.nii.gz")
    itk = sitk.ReadImage(str(tmp_path / "x.nii.gz"))
    data, spacing, _ = to_nnunet_axes(volume, plan())
    np.testing.assert_array_equal(data[0], sitk.GetArrayFromImage(itk))
    np.testing.assert_allclose(spacing, itk.GetSpacing()[::-1], rtol=1e-6)
    for transpose in ((2, 0, 1), (1, 2, 0)):
        p = plan(transpose)
        moved, moved_spacing, orientation = to_nnunet_axes(volume, p)
        assert moved_spacing == [spacing[a] for a in transpose]
        np.testing.assert_array_equal(from_nnunet_axes(moved, p, orientation), volume.array)
    p = plan(reader="NibabelIOWithReorient")
    moved, _, orientation = to_nnunet_axes(volume, p)
    np.testing.assert_array_equal(from_nnunet_axes(moved, p, orientation), volume.array)

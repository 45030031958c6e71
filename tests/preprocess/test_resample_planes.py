"""The plane-by-plane in-plane pass of anisotropic resampling equals the 3D transform it
replaces (identity along the separate axis), for linear and cubic interpolation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medseg.preprocess.steps import resample_array, resampling_matrix


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("order", [1, 3])
def test_planes_equal_the_3d_transform(axis: int, order: int):
    rng = np.random.default_rng(axis)
    shape = [30, 26, 12]
    array = ndimage.gaussian_filter(rng.normal(size=(2, *shape)), 1.5).astype(np.float32)
    out_shape = [17, 40, 9]
    in_plane = list(out_shape)
    in_plane[axis] = shape[axis]
    m = resampling_matrix(shape, in_plane)
    first = np.stack([ndimage.affine_transform(array[c], np.diag(m)[:3], offset=m[:3, 3],
                                               output_shape=tuple(in_plane), order=order,
                                               mode="nearest") for c in range(2)])
    expected = resample_array(first, out_shape, 0)
    np.testing.assert_allclose(resample_array(array, out_shape, order, axis), expected,
                               atol=1e-6)

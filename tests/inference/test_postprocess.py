"""Largest-connected-component post-processing."""

from __future__ import annotations

import numpy as np

from medseg.inference.postprocess import keep_largest_component, largest_component


def test_largest_component_keeps_the_biggest_blob():
    mask = np.zeros((10, 10, 10), bool)
    mask[1:4, 1:4, 1:4] = True  # 27 voxels
    mask[6:8, 6:8, 6:8] = True  # 8 voxels
    kept = largest_component(mask)
    assert kept.sum() == 27 and kept[2, 2, 2] and not kept[7, 7, 7]


def test_connectivity_decides_what_touches():
    mask = np.zeros((4, 4, 4), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[2, 2, 2] = True  # diagonal neighbours only
    assert largest_component(mask, connectivity=1).sum() == 1
    assert largest_component(mask, connectivity=3).sum() == 3


def test_keep_largest_component_per_class_and_input_untouched():
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[0:3, 0:3, 0:3] = 1
    labels[10:12, 10:12, 10:12] = 1  # small island of class 1
    labels[5:9, 5:9, 5:9] = 2
    labels[0, 11, 0] = 2  # one-voxel island of class 2
    labels[0, 11, 11] = 3  # class 3 not processed
    before = labels.copy()
    out = keep_largest_component(labels, classes=[1, 2])
    np.testing.assert_array_equal(labels, before)
    assert (out == 1).sum() == 27 and (out == 2).sum() == 64
    assert out[0, 11, 11] == 3 and out[11, 11, 11] == 0 and out.dtype == labels.dtype

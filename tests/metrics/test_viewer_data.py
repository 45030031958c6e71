"""Viewer data: layers in RAS order on one grid, downsampling that keeps the physical extent,
exact label and CT intensity storage, quantisation bounds, the script format."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from medseg.core import Volume
from medseg.metrics.viewer_data import (
    MAX_EDGE,
    MAX_VOXELS,
    CaseLayers,
    case_data,
    encode_image,
    guess_modality,
    viewer_grid,
    viewer_shape,
    write_case_script,
)
from tests.conftest import make_affine, sphere_label


def decode(layer: dict, shape: list[int]) -> np.ndarray:
    """Independent decoder of one layer (what viewer.js does)."""
    raw = gzip.decompress(base64.b64decode(layer["data"]))
    if layer["dtype"] == "uint16":
        n = len(raw) // 2
        high = np.frombuffer(raw[:n], np.uint8).astype(np.uint16)
        values = (high << 8) | np.frombuffer(raw[n:], np.uint8)
    else:
        values = np.frombuffer(raw, np.uint8)
    return (layer["offset"] + layer["scale"] * values.astype(np.float64)).reshape(shape)


@pytest.mark.parametrize("shape", [(35, 50, 36), (512, 512, 300), (1000, 20, 20), (600, 600, 1)])
def test_viewer_shape_respects_the_limits_and_keeps_small_grids(shape):
    out = viewer_shape(shape)
    assert all(1 <= o <= min(s, MAX_EDGE) for o, s in zip(out, shape, strict=True))
    assert np.prod(out) <= MAX_VOXELS
    if max(shape) <= MAX_EDGE and np.prod(shape) <= MAX_VOXELS:
        assert out == shape
    if shape[0] == shape[1]:  # a square slice stays square
        assert out[0] == out[1]


def test_layers_come_in_ras_order_exactly_without_downsampling():
    shape = (12, 10, 8)
    affine = make_affine((0.8, 0.8, 2.0), "LPS")
    labels = sphere_label(shape, radius=3)
    labels[:6][labels[:6] > 0] = 2
    ct = np.random.default_rng(0).integers(-1024, 2000, shape).astype(np.int16)
    data = case_data(CaseLayers(Volume.from_spatial(labels, affine),
                                Volume.from_spatial(np.roll(labels, 1, 0), affine),
                                Volume.from_spatial(ct, affine)))
    assert data["shape"] == list(shape) and not data["downsampled"]
    assert data["spacing"] == pytest.approx([0.8, 0.8, 2.0])
    ras = (slice(None, None, -1), slice(None, None, -1), slice(None))  # L->R, P->A
    np.testing.assert_array_equal(decode(data["layers"]["prediction"], data["shape"]),
                                  labels[ras])
    np.testing.assert_array_equal(decode(data["layers"]["reference"], data["shape"]),
                                  np.roll(labels, 1, 0)[ras])
    np.testing.assert_array_equal(decode(data["layers"]["image"], data["shape"]), ct[ras])
    assert data["modality"] == "CT" and data["labels_present"] == [1, 2]
    focus = tuple(data["focus"])
    assert labels[ras][focus] > 0  # the first slices shown cut the structure


def test_downsampling_keeps_the_physical_extent_and_the_structure():
    shape = (300, 40, 30)
    affine = make_affine((0.5, 1.0, 1.0), "RAS", (0, 10, 0), origin=(-20, 5, 7))
    labels = sphere_label(shape, center=(200, 20, 15), radius=12)
    grid = viewer_grid(Volume.from_spatial(labels, affine), max_voxels=100_000, max_edge=64)
    assert grid.spatial_shape[0] == 64 and np.prod(grid.spatial_shape) <= 100_000

    def corner(volume: Volume) -> np.ndarray:  # outer corner of the first voxel, in mm
        return (volume.affine @ [-0.5, -0.5, -0.5, 1])[:3]

    def far_corner(volume: Volume) -> np.ndarray:
        return (volume.affine @ [*(np.asarray(volume.spatial_shape) - 0.5), 1])[:3]

    source = Volume.from_spatial(labels, affine)
    np.testing.assert_allclose(corner(grid), corner(source), atol=1e-6)
    np.testing.assert_allclose(far_corner(grid), far_corner(source), atol=1e-6)
    data = case_data(CaseLayers(source), max_voxels=100_000, max_edge=64)
    small = decode(data["layers"]["prediction"], data["shape"])
    voxel_ml = np.prod(grid.spacing)
    assert small.sum() * voxel_ml == pytest.approx(labels.sum() * 0.5, rel=0.15)
    centre = (grid.affine @ [*np.argwhere(small).mean(0), 1])[:3]
    expected = (affine @ [*np.argwhere(labels).mean(0), 1])[:3]
    np.testing.assert_allclose(centre, expected, atol=max(grid.spacing))


def test_float_images_are_quantised_within_half_a_step():
    image = np.random.default_rng(1).normal(0, 3, (9, 8, 7)).astype(np.float32)
    layer = encode_image(image)
    error = np.abs(decode(layer, list(image.shape)) - image)
    assert error.max() <= layer["scale"] / 2 + 1e-6
    assert guess_modality(Volume.from_spatial(image, np.eye(4))) is None


def test_uncertainty_layer_is_clipped_and_quantised():
    labels = sphere_label((8, 8, 8))
    u = np.linspace(-0.2, 1.3, labels.size).reshape(labels.shape).astype(np.float32)
    data = case_data(CaseLayers(Volume.from_spatial(labels, np.eye(4)),
                                uncertainty=Volume.from_spatial(u, np.eye(4))))
    stored = decode(data["layers"]["uncertainty"], data["shape"])
    np.testing.assert_allclose(stored, u.clip(0, 1), atol=0.5 / 255 + 1e-9)


def test_case_script_calls_the_viewer_with_json(tmp_path: Path):
    data = case_data(CaseLayers(Volume.from_spatial(sphere_label((6, 6, 6)), np.eye(4))))
    path = tmp_path / "viewer" / "cases" / "00000.js"
    size = write_case_script(path, 'odd "name" </script>', data)
    text = path.read_text()
    assert size == len(text) and text.startswith("medsegViewer.addCase(")
    key, payload = json.loads("[" + text[len("medsegViewer.addCase("):-3] + "]")
    assert key == 'odd "name" </script>' and payload["shape"] == [6, 6, 6]

"""HD95, ASSD and NSD against hand-computed values (anisotropic spacing) and against MONAI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_hausdorff_distance,
    compute_surface_dice,
)
from scipy import ndimage

from medseg.metrics.surface import surface_distances, surface_scores

SHAPE = (10, 8, 8)


def _plane(axis: int, index: int) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    np.moveaxis(mask, axis, 0)[index] = True
    return mask


@pytest.mark.parametrize(("axis", "spacing", "expected"), [
    (0, (1.5, 0.7, 0.9), 4.5),  # 3 voxels apart along axis 0: 3 * 1.5 mm
    (2, (1.5, 0.7, 0.9), 2.7),  # the same 3 voxels along axis 2: 3 * 0.9 mm
])
def test_parallel_planes_are_at_their_physical_distance(axis, spacing, expected):
    pred, ref = _plane(axis, 2), _plane(axis, 5)
    scores = surface_scores(pred, ref, spacing, nsd_tolerance_mm=1.0)
    assert scores["hd95_mm"] == pytest.approx(expected, rel=1e-6)
    assert scores["assd_mm"] == pytest.approx(expected, rel=1e-6)
    assert scores["nsd"] == 0.0


@pytest.mark.parametrize(("tolerance", "expected"), [(4.49, 0.0), (4.5, 1.0), (4.51, 1.0)])
def test_nsd_switches_at_the_distance_between_planes(tolerance, expected):
    scores = surface_scores(_plane(0, 2), _plane(0, 5), (1.5, 0.7, 0.9), tolerance)
    assert scores["nsd"] == expected


def test_single_voxels_at_a_known_offset():
    pred, ref = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    pred[2, 2, 2] = True
    ref[3, 4, 5] = True  # offset (1, 2, 3) voxels at (2, 1, 0.5) mm
    distance = math.sqrt(2.0**2 + 2.0**2 + 1.5**2)
    scores = surface_scores(pred, ref, (2.0, 1.0, 0.5), nsd_tolerance_mm=1.0)
    assert scores["hd95_mm"] == pytest.approx(distance, rel=1e-6)
    assert scores["assd_mm"] == pytest.approx(distance, rel=1e-6)
    assert surface_scores(pred, pred, (2.0, 1.0, 0.5), 1.0) == {
        "hd95_mm": 0.0, "assd_mm": 0.0, "nsd": 1.0}


def _cubes() -> tuple[np.ndarray, np.ndarray]:
    """A 4³ cube and the same cube shifted by one voxel along axis 0."""
    ref, pred = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    ref[2:6, 2:6, 2:6] = True
    pred[3:7, 2:6, 2:6] = True
    return pred, ref


# Each surface has 56 voxels (4³ - 2³). Per direction, 36 of them lie on the other surface
# (distance 0), 16 (the outer face) are one axis-0 step away, and 4 (the inner face's
# centre) are min(axis-0 step, one in-plane step) away from the other surface.
@pytest.mark.parametrize(("spacing", "hd95", "assd", "nsd_by_tolerance"), [
    ((2.0, 0.5, 0.5), 2.0, 2 * (16 * 2.0 + 4 * 0.5) / 112,
     {0.4: 72 / 112, 1.0: 80 / 112, 2.0: 1.0}),
    ((0.5, 2.0, 2.0), 0.5, 2 * (20 * 0.5) / 112, {0.4: 72 / 112, 0.5: 1.0}),
])
def test_cube_against_shifted_cube(spacing, hd95, assd, nsd_by_tolerance):
    pred, ref = _cubes()
    for tolerance, nsd in nsd_by_tolerance.items():
        scores = surface_scores(pred, ref, spacing, tolerance)
        assert scores == pytest.approx({"hd95_mm": hd95, "assd_mm": assd, "nsd": nsd}, rel=1e-6)


def test_hd95_ignores_a_single_outlier_but_assd_does_not():
    ref = _plane(0, 5)  # 64 surface voxels
    pred = ref.copy()
    pred[0, 0, 0] = True  # one voxel 5 steps away along axis 0 (and 0 in-plane)
    pred_to_ref, ref_to_pred = surface_distances(pred, ref, (1.5, 1.0, 1.0))
    assert sorted(pred_to_ref)[-1] == pytest.approx(7.5)
    assert not ref_to_pred.any()
    scores = surface_scores(pred, ref, (1.5, 1.0, 1.0), 1.0)
    assert scores["hd95_mm"] == 0.0
    assert scores["assd_mm"] == pytest.approx(7.5 / (65 + 64))
    assert scores["nsd"] == pytest.approx(128 / 129)


def test_empty_conventions():
    empty, voxel = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    voxel[4, 4, 4] = True
    assert surface_scores(empty, empty, (1, 1, 1), 1.0) == {
        "hd95_mm": 0.0, "assd_mm": 0.0, "nsd": 1.0}
    for pred, ref in ((voxel, empty), (empty, voxel)):
        scores = surface_scores(pred, ref, (1, 1, 1), 1.0)
        assert math.isnan(scores["hd95_mm"]) and math.isnan(scores["assd_mm"])
        assert scores["nsd"] == 0.0


def _blob(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = rng.normal(size=(20, 18, 14))
    return ndimage.gaussian_filter(field, 2.0) > 0.05


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_monai_compute_functions(seed):
    pred, ref = _blob(seed), _blob(seed + 10)
    spacing = [0.8, 1.7, 3.0]
    ours = surface_scores(pred, ref, spacing, nsd_tolerance_mm=2.0)

    def one_hot(mask: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.stack([~mask, mask])[None].astype(np.float32))

    p, r = one_hot(pred), one_hot(ref)
    hd = compute_hausdorff_distance(p, r, percentile=95, spacing=spacing)
    asd = compute_average_surface_distance(p, r, symmetric=True, spacing=spacing)
    nsd = compute_surface_dice(p, r, class_thresholds=[2.0], spacing=spacing)
    assert ours["hd95_mm"] == pytest.approx(float(hd), rel=1e-5)
    assert ours["assd_mm"] == pytest.approx(float(asd), rel=1e-5)
    assert ours["nsd"] == pytest.approx(float(nsd), rel=1e-6)

from __future__ import annotations

import numpy as np
import pytest

from medseg.core import GeometryError, Volume, geometry
from tests.conftest import make_affine


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "PIR", "ASL", "LIP"])
@pytest.mark.parametrize("oblique", [(0, 0, 0), (12, -7, 25)])
def test_to_ras_round_trip_keeps_world_positions(volume_factory, orientation, oblique):
    vol = volume_factory(shape=(4, 5, 6), spacing=(0.7, 1.3, 3.0), orientation=orientation,
                         oblique_degrees=oblique, channels=2)
    ras = vol.to_ras()
    assert ras.axcodes == ("R", "A", "S")
    # every voxel keeps its world position and value
    idx = np.indices(vol.spatial_shape).reshape(3, -1).T
    world = geometry.apply_affine(vol.affine, idx)
    idx_ras = np.rint(geometry.apply_affine(np.linalg.inv(ras.affine), world)).astype(int)
    assert np.array_equal(vol.array[:, idx[:, 0], idx[:, 1], idx[:, 2]],
                          ras.array[:, idx_ras[:, 0], idx_ras[:, 1], idx_ras[:, 2]])
    back = geometry.from_ras(ras.array, np.array(ras.meta["orientation_from_source"]))
    assert np.array_equal(back, vol.array)


def test_derived_geometry_matches_construction():
    aff = make_affine((0.5, 2.0, 3.0), "LPS", origin=(1, 2, 3))
    assert geometry.spacing(aff) == pytest.approx((0.5, 2.0, 3.0))
    assert geometry.origin(aff) == (1.0, 2.0, 3.0)
    assert geometry.axcodes(aff) == ("L", "P", "S")
    assert not geometry.is_oblique(aff)
    assert geometry.is_oblique(make_affine(oblique_degrees=(0, 0, 10)))


def test_lps_ras_is_an_involution():
    aff = make_affine((1, 2, 3), "LPS", (5, 0, 3), (4, 5, 6))
    assert np.allclose(geometry.lps_to_ras(geometry.ras_to_lps(aff)), aff)
    assert geometry.axcodes(geometry.lps_to_ras(make_affine(orientation="RAS"))) == ("L", "P", "S")


@pytest.mark.parametrize("bad", [np.zeros((4, 4)), np.eye(3), np.full((4, 4), np.nan)])
def test_bad_affines_are_refused(bad):
    with pytest.raises(GeometryError):
        Volume(np.zeros((1, 2, 2, 2)), bad)


def test_volume_requires_channel_first_4d():
    with pytest.raises(GeometryError, match="channel-first"):
        Volume(np.zeros((2, 2, 2)), np.eye(4))
    assert Volume.from_spatial(np.zeros((2, 3, 4)), np.eye(4)).spatial_shape == (2, 3, 4)

"""NRRD and MetaImage via SimpleITK: LPS -> RAS at the boundary, exact round trips."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from medseg.core import ReadError
from medseg.io import read_volume, write_volume


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd", ".nhdr"])
@pytest.mark.parametrize(("orientation", "oblique"), [("RAS", (0, 0, 0)), ("LPS", (10, -20, 5)),
                                                      ("PIR", (0, 30, 0))])
def test_round_trip(tmp_path, volume_factory, suffix, orientation, oblique):
    vol = volume_factory(orientation=orientation, oblique_degrees=oblique,
                         spacing=(0.7, 1.3, 2.5), origin=(-3.5, 12.25, 40.0))
    write_volume(vol, tmp_path / f"v{suffix}")
    back = read_volume(tmp_path / f"v{suffix}")
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.dtype == vol.dtype
    np.testing.assert_allclose(back.affine, vol.affine, rtol=0, atol=1e-9)
    assert back.meta["format"] == ("nrrd" if suffix in (".nrrd", ".nhdr") else "mha")


def test_detached_header_formats_write_both_files_and_nothing_else(tmp_path, volume_factory):
    write_volume(volume_factory(), tmp_path / "v.mhd")
    write_volume(volume_factory(), tmp_path / "w.nhdr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mhd", "v.raw", "w.nhdr", "w.raw"]


def test_lps_is_converted_to_ras(tmp_path):
    image = sitk.GetImageFromArray(np.arange(24, dtype=np.int16).reshape(2, 3, 4))  # (z, y, x)
    image.SetSpacing((0.5, 2.0, 3.0))
    image.SetOrigin((10.0, 20.0, 30.0))  # LPS
    sitk.WriteImage(image, str(tmp_path / "lps.nrrd"))
    vol = read_volume(tmp_path / "lps.nrrd")
    np.testing.assert_allclose(vol.affine, np.array([[-0.5, 0, 0, -10], [0, -2.0, 0, -20],
                                                     [0, 0, 3.0, 30], [0, 0, 0, 1]]))
    assert vol.axcodes == ("L", "P", "S")
    assert vol.spatial_shape == (4, 3, 2)
    assert vol.array[0, 3, 2, 1] == 23  # x=3, y=2, z=1 is the last voxel


def test_multichannel_as_vector_pixels(tmp_path, volume_factory):
    vol = volume_factory(channels=2, orientation="LAS")
    write_volume(vol, tmp_path / "mc.nrrd")
    back = read_volume(tmp_path / "mc.nrrd")
    np.testing.assert_array_equal(back.array, vol.array)


def test_labels_keep_dtype(tmp_path, volume_factory):
    vol = volume_factory(kind="label", dtype=np.uint8)
    write_volume(vol, tmp_path / "seg.mha")
    assert read_volume(tmp_path / "seg.mha").dtype == np.uint8


def test_corrupt_file(tmp_path):
    (tmp_path / "bad.mha").write_text("ObjectType = Image\nNDims = 3\nDimSize = 4 4\n")
    with pytest.raises(ReadError, match=r"bad\.mha: cannot read MHA file"):
        read_volume(tmp_path / "bad.mha")

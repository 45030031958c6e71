"""NIfTI round trips keep array, dtype and affine; bad files give ReadError naming them."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from medseg.core import InputError, OutputError, ReadError, Volume
from medseg.io import check_finite, read_volume, write_volume
from tests.conftest import HIPPOCAMPUS, make_affine, requires_shared

CASES = [
    ("RAS", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    ("LPS", (0.0, 0.0, 0.0), (0.5, 0.75, 2.0)),
    ("PIR", (0.0, 0.0, 0.0), (1.2, 0.9, 3.0)),
    ("LPS", (12.0, -7.0, 25.0), (0.69, 0.69, 6.5)),
    ("ASL", (-30.0, 5.0, 3.0), (1.0, 2.0, 0.8)),
]


@pytest.mark.parametrize(("orientation", "oblique", "spacing"), CASES)
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_round_trip_keeps_array_and_affine(tmp_path, volume_factory, orientation, oblique,
                                           spacing, suffix):
    vol = volume_factory(orientation=orientation, oblique_degrees=oblique, spacing=spacing,
                         origin=(-12.5, 40.25, 3.0))
    write_volume(vol, tmp_path / f"v{suffix}")
    back = read_volume(tmp_path / f"v{suffix}")
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.dtype == vol.dtype
    # NIfTI-1 stores the sform in float32: exact up to float32 rounding
    np.testing.assert_allclose(back.affine, vol.affine, rtol=0, atol=1e-5)
    assert back.meta == {"source": str(tmp_path / f"v{suffix}"), "format": "nifti"}


def test_axis_aligned_affine_is_exact(tmp_path, volume_factory):
    vol = volume_factory(orientation="LPS", spacing=(0.5, 0.75, 2.0), origin=(10, -20, 30))
    write_volume(vol, tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(read_volume(tmp_path / "v.nii.gz").affine, vol.affine)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.uint16])
def test_labels_stay_integer(tmp_path, volume_factory, dtype):
    vol = volume_factory(kind="label", dtype=dtype, orientation="LIP", oblique_degrees=(5, 5, 5))
    write_volume(vol, tmp_path / "seg.nii.gz")
    back = read_volume(tmp_path / "seg.nii.gz")
    assert back.dtype == dtype
    np.testing.assert_array_equal(back.array, vol.array)
    assert set(np.unique(back.array)) == {0, 1, 2}


def test_sform_and_qform_both_set(tmp_path, volume_factory):
    vol = volume_factory(orientation="LPS", oblique_degrees=(10, 0, 20), spacing=(1, 2, 3))
    write_volume(vol, tmp_path / "v.nii.gz")
    img = nib.load(tmp_path / "v.nii.gz")
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    np.testing.assert_allclose(img.get_qform(), vol.affine, atol=1e-4)
    np.testing.assert_allclose(img.get_sform(), vol.affine, atol=1e-5)


def test_qform_only_file_is_respected(tmp_path):
    affine = make_affine((1.5, 1.0, 2.0), "LAS", (0, 15, 0), (3, 4, 5))
    img = nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), None)
    img.set_qform(affine, code=1)
    img.set_sform(None, code=0)
    nib.save(img, tmp_path / "q.nii")
    np.testing.assert_allclose(read_volume(tmp_path / "q.nii").affine, affine, atol=1e-5)


def test_multichannel_round_trip_and_4d_time_axis(tmp_path, volume_factory):
    vol = volume_factory(channels=3, orientation="RPI")
    write_volume(vol, tmp_path / "mc.nii.gz")
    assert nib.load(tmp_path / "mc.nii.gz").shape == (*vol.spatial_shape, 3)
    back = read_volume(tmp_path / "mc.nii.gz")
    np.testing.assert_array_equal(back.array, vol.array)


def test_bool_written_as_uint8(tmp_path):
    vol = Volume(np.ones((1, 2, 3, 4), bool), np.eye(4))
    write_volume(vol, tmp_path / "b.nii.gz")
    back = read_volume(tmp_path / "b.nii.gz")
    assert back.dtype == np.uint8 and back.array.sum() == 24


def test_non_finite_voxels_refused_unless_allowed(tmp_path, volume_factory):
    vol = volume_factory()
    vol.array[0, 1, 2, 3] = np.nan
    vol.array[0, 2, 2, 3] = np.inf
    write_volume(vol, tmp_path / "nan.nii.gz")
    with pytest.raises(ReadError, match="2 NaN/Inf voxel") as info:
        read_volume(tmp_path / "nan.nii.gz")
    assert "nan.nii.gz" in str(info.value)
    assert np.isnan(read_volume(tmp_path / "nan.nii.gz", allow_nonfinite=True).array).sum() == 1
    with pytest.raises(ReadError):
        check_finite(vol)


@pytest.mark.parametrize(
    ("content", "name", "match"),
    [
        (b"", "empty.nii.gz", "0 bytes"),
        (b"this is not an image at all" * 20, "text.nii", "cannot read NIfTI"),
        (gzip.compress(b"garbage" * 100), "garbage.nii.gz", "cannot read NIfTI"),
        (b"hello", "notes.txt", "unrecognised image format"),
    ],
)
def test_bad_files(tmp_path, content, name, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ReadError, match=match) as info:
        read_volume(tmp_path / name)
    assert name in str(info.value)


def test_truncated_gzip(tmp_path, volume_factory):
    write_volume(volume_factory(shape=(20, 20, 20)), tmp_path / "v.nii.gz")
    data = (tmp_path / "v.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ReadError, match=r"cut\.nii\.gz"):
        read_volume(tmp_path / "cut.nii.gz")


def test_missing_file_and_bad_output(tmp_path, volume_factory):
    with pytest.raises(ReadError, match="no such file"):
        read_volume(tmp_path / "absent.nii.gz")
    with pytest.raises(OutputError, match="unsupported output format"):
        write_volume(volume_factory(), tmp_path / "out.png")
    with pytest.raises(OutputError, match="folder"):
        write_volume(volume_factory(), tmp_path)


def test_write_is_atomic_and_leaves_no_temporaries(tmp_path, volume_factory):
    target = tmp_path / "sub" / "v.nii.gz"
    write_volume(volume_factory(), target)
    write_volume(volume_factory(seed=3), target)  # overwrite
    assert sorted(p.name for p in target.parent.iterdir()) == ["v.nii.gz"]
    np.testing.assert_array_equal(read_volume(target).array, volume_factory(seed=3).array)


def test_series_selector_refused_for_files(tmp_path, volume_factory):
    write_volume(volume_factory(), tmp_path / "v.nii.gz")
    with pytest.raises(InputError, match="only applies to DICOM folders"):
        read_volume(tmp_path / "v.nii.gz", series="T1")


@requires_shared
def test_reads_real_hippocampus_case_with_its_dtype():
    image = HIPPOCAMPUS / "imagesTr" / "hippocampus_001.nii.gz"
    label = read_volume(HIPPOCAMPUS / "labelsTr" / "hippocampus_001.nii.gz")
    assert label.dtype.kind == "u" and set(np.unique(label.array)) <= {0, 1, 2}
    vol = read_volume(image)
    np.testing.assert_array_equal(vol.affine, nib.load(image).affine)
    assert vol.same_grid(label)




def test_file_without_sform_or_qform_warns(tmp_path, caplog):
    img = nib.Nifti1Image(np.zeros((3, 4, 5), np.int16), None)
    img.header.set_zooms((2.0, 3.0, 4.0))
    img.set_sform(None, code=0)
    img.set_qform(None, code=0)
    nib.save(img, tmp_path / "bare.nii")
    with caplog.at_level("WARNING"):
        vol = read_volume(tmp_path / "bare.nii")
    assert "neither sform nor qform" in caplog.text
    np.testing.assert_allclose(vol.spacing, (2.0, 3.0, 4.0))

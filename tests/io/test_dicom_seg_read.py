"""Reading DICOM-SEGs written by highdicom (not medseg): binary and fractional, several
segments, sparse frames, frames placed by source image and by (perturbed) position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.core import Volume
from medseg.core.errors import GeometryError, ReadError
from medseg.io import read_annotation, read_volume
from medseg.io.dicom_seg import write_dicom_seg
from medseg.io.dicom_seg_read import read_dicom_seg
from tests.conftest import make_affine
from tests.io.dciodvfy import dciodvfy_errors, requires_dciodvfy
from tests.io.dicom_factory import write_series
from tests.io.seg_factory import highdicom_seg

SHAPE = (14, 12, 7)
NAMES = {0: "background", 1: "Liver", 2: "Kidney", 3: "Lesion"}
AFFINE = make_affine((0.7, 0.8, 2.5), "LPS", (10, -6, 15), (20.0, -5.0, 3.0))


@pytest.fixture
def image(tmp_path: Path) -> Volume:
    write_series(tmp_path / "study" / "MR", np.full(SHAPE, 50, np.int16), AFFINE)
    return read_volume(tmp_path / "study" / "MR")


def masks() -> np.ndarray:
    """(3, I, J, K) disjoint masks; slices 0 and 6 empty (sparse frames)."""
    out = np.zeros((3, *SHAPE), bool)
    out[0, 2:8, 3:9, 1:4] = True
    out[1, 9:13, 1:5, 2:6] = True
    out[2, 4, 10, 5] = True  # one voxel
    return out


def expected_labels(stack: np.ndarray) -> np.ndarray:
    out = np.zeros(SHAPE, np.uint8)
    for n, mask in enumerate(stack, start=1):
        out[mask] = n
    return out


def test_binary_segments_with_sparse_frames(image, tmp_path):
    path = highdicom_seg(image, masks(), tmp_path / "study" / "SEG" / "seg.dcm")
    assert pydicom.dcmread(path).NumberOfFrames < 3 * SHAPE[2]  # empty frames omitted
    result = read_annotation(path)  # the series is found next to it
    np.testing.assert_array_equal(result.labels.array[0], expected_labels(masks()))
    assert result.names == {0: "background", 1: "Liver", 2: "Kidney", 3: "Lesion"}
    assert result.labels.same_grid(image) and result.labels.meta["format"] == "dicom-seg"
    chosen = read_dicom_seg(path, image, ["lesion", "LIVER"])
    np.testing.assert_array_equal(chosen.labels.array[0] == 1, masks()[2])
    np.testing.assert_array_equal(chosen.labels.array[0] == 2, masks()[0])
    assert chosen.unmatched == ("Kidney",)


def test_fractional_segments_are_thresholded_at_one_half(image, tmp_path):
    fractions = masks().astype(np.float32) * 0.8
    fractions[0, 2:8, 3:9, 1] = 0.3  # below one half: outside
    path = highdicom_seg(image, fractions, tmp_path / "frac.dcm", kind="FRACTIONAL")
    expected = masks()
    expected[0, :, :, 1] = False
    got = read_dicom_seg(path, image).labels.array[0]
    np.testing.assert_array_equal(got, expected_labels(expected))


def perturb(path: Path, offset_mm: np.ndarray, drop_references: bool) -> Path:
    """A 'third-party' copy: frame positions moved by ``offset_mm`` (LPS), and optionally no
    source-image references, so frames can only be placed by position."""
    ds = pydicom.dcmread(path)
    for item in ds.PerFrameFunctionalGroupsSequence:
        position = item.PlanePositionSequence[0]
        moved = np.asarray(position.ImagePositionPatient, float) + offset_mm
        position.ImagePositionPatient = [f"{v:.6f}" for v in moved]
        if drop_references:
            del item.DerivationImageSequence
    out = path.with_name(f"moved_{drop_references}.dcm")
    ds.save_as(out)
    return out


@pytest.mark.parametrize("drop_references", [True, False], ids=["by-position", "by-instance"])
def test_frames_045_mm_off_their_slices_are_placed_exactly(image, tmp_path, drop_references):
    path = highdicom_seg(image, masks(), tmp_path / "seg.dcm")
    offset = 0.045 * np.array([0.6, -0.48, 0.64])  # 0.045 mm, partly along the slice normal
    moved = perturb(path, offset, drop_references)
    got = read_dicom_seg(moved, image).labels.array[0]
    np.testing.assert_array_equal(got, expected_labels(masks()))


def test_frames_off_the_grid_without_references_are_refused(image, tmp_path):
    moved = perturb(highdicom_seg(image, masks(), tmp_path / "seg.dcm"),
                    np.array([0.0, 0.0, 1.2]), drop_references=True)
    with pytest.raises(GeometryError, match=r"frame \d+ at .* lies on no slice"):
        read_dicom_seg(moved, image)


def test_overlapping_segments_are_an_error_or_one_mask_each(image, tmp_path):
    stack = masks()
    stack[1, 5:8, 5:8, 2] = True  # Kidney overlaps Liver
    path = highdicom_seg(image, stack, tmp_path / "seg.dcm")
    with pytest.raises(ReadError,
                       match=r"structures overlap: 'Liver' and 'Kidney' \(\d+ voxels\)"):
        read_dicom_seg(path, image)
    each = read_dicom_seg(path, image, per_structure=True)
    np.testing.assert_array_equal(each.labels.array.astype(bool), stack)
    later = read_dicom_seg(path, image, overlap="later").labels.array[0]
    assert later[6, 6, 2] == 2


def test_medseg_seg_round_trip(image, tmp_path):
    labels = image.with_array(expected_labels(masks())[None])
    write_dicom_seg(labels, tmp_path / "ours.dcm", NAMES)
    np.testing.assert_array_equal(read_dicom_seg(tmp_path / "ours.dcm", image).labels.array,
                                  labels.array)


@requires_dciodvfy
def test_dciodvfy_finds_no_error_in_medseg_segs(image, tmp_path):
    write_dicom_seg(image.with_array(expected_labels(masks())[None]), tmp_path / "ours.dcm",
                    NAMES)
    assert dciodvfy_errors(tmp_path / "ours.dcm") == []


def test_a_grid_of_another_size_is_refused(image, tmp_path):
    path = highdicom_seg(image, masks(), tmp_path / "seg.dcm")
    small = Volume(image.array[:, :10], image.affine, image.meta)
    with pytest.raises(GeometryError, match="frames of 14x12 pixels"):
        read_dicom_seg(path, small)

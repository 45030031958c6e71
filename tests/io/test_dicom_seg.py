"""DICOM-SEG writing and read-back on synthetic (oblique) DICOM series."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from medseg.core import Volume
from medseg.core.errors import GeometryError, OutputError
from medseg.io.dicom_seg import write_dicom_seg
from medseg.io.dicom_seg_read import read_dicom_seg
from tests.conftest import make_affine, sphere_label
from tests.inference.dicom_synth import write_dicom_series

NAMES = {0: "background", 1: "Anterior", 2: "Posterior"}
SHAPE = (12, 10, 7)


@pytest.fixture
def source(tmp_path: Path) -> Volume:
    """An oblique LPS series on disk and its image Volume with the reader's DICOM meta."""
    affine = make_affine((0.7, 0.8, 3.0), "LPS", (10, 5, 20), (5, -3, 12))
    image = Volume.from_spatial(np.random.default_rng(0).integers(0, 200, SHAPE), affine)
    folder = write_dicom_series(image, tmp_path / "series")
    files = sorted(str(p) for p in folder.glob("*.dcm"))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    meta = {"source": str(folder), "format": "dicom", "dicom_files": files,
            "sop_instance_uids": [h.SOPInstanceUID for h in headers],
            "series_uid": headers[0].SeriesInstanceUID}
    return Volume(image.array, affine, meta)


def _labels(source: Volume) -> Volume:
    lab = sphere_label(SHAPE)
    lab[:6][lab[:6] > 0] = 2
    return source.with_array(lab[None])


def test_round_trip_decodes_the_same_mask(source, tmp_path):
    labels = _labels(source)
    write_dicom_seg(labels, tmp_path / "seg.dcm", NAMES)
    back = read_dicom_seg(tmp_path / "seg.dcm", source, NAMES).labels
    assert back.same_grid(source)
    np.testing.assert_array_equal(back.array, labels.array)


def test_frames_reference_the_source_instances(source, tmp_path):
    labels = _labels(source)
    write_dicom_seg(labels, tmp_path / "seg.dcm", NAMES)
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert [seg.get_segment_description(n).segment_label for n in (1, 2)] == ["Anterior",
                                                                             "Posterior"]
    ds = pydicom.dcmread(tmp_path / "seg.dcm")
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == source.meta["series_uid"]
    uids = source.meta["sop_instance_uids"]
    pixels = ds.pixel_array
    for frame, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ref = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k = uids.index(ref)
        position = pydicom.dcmread(source.meta["dicom_files"][k]).ImagePositionPatient
        np.testing.assert_allclose(
            [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
            [float(v) for v in position], atol=1e-3)
        segment = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        expected = np.equal(labels.array[0, :, :, k].T, segment)  # segment n = label n here
        np.testing.assert_array_equal(pixels[frame].astype(bool), expected)


def test_label_values_map_to_consecutive_segments(source, tmp_path):
    lab = _labels(source).array.copy()
    lab[lab == 2] = 7
    names = {0: "background", 1: "liver", 7: "tumour"}
    write_dicom_seg(source.with_array(lab), tmp_path / "seg.dcm", names)
    assert hd.seg.segread(tmp_path / "seg.dcm").segment_numbers == [1, 2]
    back = read_dicom_seg(tmp_path / "seg.dcm", source, names).labels
    np.testing.assert_array_equal(back.array, lab)


def test_needs_a_dicom_source(source, tmp_path):
    nifti_like = Volume(_labels(source).array, source.affine, {"source": "x.nii.gz"})
    with pytest.raises(OutputError, match="DICOM source"):
        write_dicom_seg(nifti_like, tmp_path / "seg.dcm", NAMES)
    assert not (tmp_path / "seg.dcm").exists()


def test_refuses_a_regularised_source_with_the_reason(source, tmp_path):
    meta = {**source.meta, "dicom_files": [], "sop_instance_uids": [],
            "regularized": {"reasons": ["missing slices"]}}
    with pytest.raises(OutputError, match=r"regularised .* write NIfTI instead"):
        write_dicom_seg(Volume(_labels(source).array, source.affine, meta),
                        tmp_path / "seg.dcm", NAMES)


def test_rejects_a_label_grid_off_the_series(source, tmp_path):
    shifted = source.affine.copy()
    shifted[:3, 3] += 1.0
    labels = Volume(_labels(source).array, shifted, source.meta)
    with pytest.raises(GeometryError, match="mm away"):
        write_dicom_seg(labels, tmp_path / "seg.dcm", NAMES)


def test_rejects_unnamed_label_values(source, tmp_path):
    with pytest.raises(OutputError, match=r"\[2\]"):
        write_dicom_seg(_labels(source), tmp_path / "seg.dcm", {0: "bg", 1: "Anterior"})

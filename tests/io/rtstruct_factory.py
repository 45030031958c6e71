"""Synthetic RT Structure Sets for tests, written with pydicom (not medseg's writer).

Contours are given in the voxel indices ``(i, j)`` of a slice ``k`` of a synthetic series
(``tests/io/dicom_factory.py``) and placed in patient space from that series' own headers
(ImagePositionPatient, ImageOrientationPatient, PixelSpacing), so a test knows exactly
which voxel centres each contour encloses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


@dataclass
class FakeContour:
    """A contour on slice ``k``: ``points`` (n, 2) voxel indices (i, j), its type, and
    whether it names its slice image (ContourImageSequence)."""

    k: int
    points: np.ndarray
    kind: str = "CLOSED_PLANAR"
    names_image: bool = True
    image_uid: str | None = None  # overrides the slice's own SOP instance UID
    depth: float = 0.0  # offset along the slice normal, in slice steps


@dataclass
class FakeRoi:
    name: str
    contours: list[FakeContour] = field(default_factory=list)
    number: int | None = None


def rectangle(i0: float, i1: float, j0: float, j1: float) -> np.ndarray:
    """Corners of an axis-aligned rectangle in voxel indices (i0, j0) .. (i1, j1)."""
    return np.array([[i0, j0], [i1, j0], [i1, j1], [i0, j1]], float)


def patient_points(header: Dataset, ij: np.ndarray, depth_mm: float = 0.0) -> np.ndarray:
    """LPS points of voxel indices ``ij`` on the slice of ``header``."""
    iop = np.asarray(header.ImageOrientationPatient, float)
    row, col = iop[:3], iop[3:]
    spacing = np.asarray(header.PixelSpacing, float)  # (between rows, between columns)
    origin = np.asarray(header.ImagePositionPatient, float)
    normal = np.cross(row, col)
    ij = np.asarray(ij, float)
    return (origin + np.outer(ij[:, 0] * spacing[1], row) + np.outer(ij[:, 1] * spacing[0], col)
            + depth_mm * normal)


def structure_set(series: Sequence[Dataset], rois: Sequence[FakeRoi],
                  referenced_series: str | None = None) -> Dataset:
    """An RTSTRUCT on ``series`` (datasets in k order) with ``rois`` in file order."""
    first = series[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = RTSTRUCT_STORAGE
    ds.SOPClassUID = RTSTRUCT_STORAGE
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID"):
        setattr(ds, keyword, first.get(keyword, ""))
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.StructureSetLabel = "synthetic"
    step = _slice_step(series)
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = referenced_series or first.SeriesInstanceUID
    ref_series.ContourImageSequence = DicomSequence([_image(s) for s in series])
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = DicomSequence([ref_series])
    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = DicomSequence([study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])
    roi_items, contour_items = [], []
    for n, roi in enumerate(rois, start=1):
        number = roi.number or n
        item = Dataset()
        item.ROINumber, item.ROIName = number, roi.name
        item.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
        roi_items.append(item)
        contours = Dataset()
        contours.ReferencedROINumber = number
        contours.ROIDisplayColor = [255, 0, 0]
        if roi.contours:
            contours.ContourSequence = DicomSequence(
                [_contour(c, series, step) for c in roi.contours])
        contour_items.append(contours)
    ds.StructureSetROISequence = DicomSequence(roi_items)
    ds.ROIContourSequence = DicomSequence(contour_items)
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _contour(contour: FakeContour, series: Sequence[Dataset], step: float) -> Dataset:
    header = series[contour.k] if 0 <= contour.k < len(series) else series[0]
    points = patient_points(header, contour.points, contour.depth * step)
    if not 0 <= contour.k < len(series):  # a slice beyond the series: extrapolate
        points = patient_points(series[0], contour.points, contour.k * step)
    item = Dataset()
    if contour.names_image:
        ref = _image(header)
        ref.ReferencedSOPInstanceUID = contour.image_uid or header.SOPInstanceUID
        item.ContourImageSequence = DicomSequence([ref])
    item.ContourGeometricType = contour.kind
    item.NumberOfContourPoints = len(points)
    item.ContourData = [f"{v:.6f}" for v in points.ravel()]
    return item


def _image(header: Dataset) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = header.SOPClassUID
    ref.ReferencedSOPInstanceUID = header.SOPInstanceUID
    return ref


def _slice_step(series: Sequence[Dataset]) -> float:
    if len(series) < 2:
        return 1.0
    a, b = (np.asarray(s.ImagePositionPatient, float) for s in series[:2])
    return float(np.linalg.norm(b - a))

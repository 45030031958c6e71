"""Assemble a DICOM series into a :class:`Volume`: geometry check, pixel data
(:mod:`medseg.io.dicom_pixels`), rescale slope/intercept, the (i, j, k) array layout and
provenance metadata.

Values: if every frame's RescaleSlope/RescaleIntercept is the identity (or absent), the
stored integer type is kept; otherwise the output is float32 ``stored * slope + intercept``
(per frame, so CT comes out in HU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from medseg.core import Volume
from medseg.io import dicom_series
from medseg.io.dicom_geometry import SliceLayout, slice_layout
from medseg.io.dicom_pixels import read_planes
from medseg.io.dicom_series import DicomSeries, describe


def read_dicom_folder(folder: str | Path, series: str | None = None) -> Volume:
    """Read one series from a series or study folder (recursive); see ``select_series``."""
    folder = Path(folder)
    with dicom_series.malformed_header(folder):
        found = dicom_series.scan_folder(folder)
        return series_to_volume(dicom_series.select_series(found, series, folder), folder)


def read_dicom_file(path: str | Path) -> Volume:
    """Read a single DICOM file: one slice (K = 1) or an enhanced multi-frame volume."""
    path = Path(path)
    with dicom_series.malformed_header(path):
        (found,) = dicom_series.scan_file(path)
        return series_to_volume(found, path)


def series_to_volume(series: DicomSeries, source: Path) -> Volume:
    """Check the geometry of ``series``, read its pixels and build the RAS volume."""
    layout = slice_layout(series.frames, describe(series), _single_slice_step(series.header))
    planes = read_planes(layout.frames, series.headers)
    return Volume(_values(layout, planes), layout.affine, _meta(series, layout, source))


def _single_slice_step(header: Dataset) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = header.get(keyword)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    return 1.0


def _values(layout: SliceLayout, planes: np.ndarray) -> np.ndarray:
    """(K, J, I) stored values -> (1, I, J, K) volume, rescaled to float32 if needed."""
    frames = layout.frames
    if any(f.slope != 1.0 or f.intercept != 0.0 for f in frames):
        slopes = np.array([f.slope for f in frames], dtype=np.float32)[:, None, None]
        intercepts = np.array([f.intercept for f in frames], dtype=np.float32)[:, None, None]
        planes = planes.astype(np.float32) * slopes + intercepts
    # a view, not a copy: (I, J, K) in Fortran order, the layout nibabel and ITK use too
    return planes.transpose(2, 1, 0)[None]


def _meta(series: DicomSeries, layout: SliceLayout, source: Path) -> dict:
    header = series.header
    return {
        "source": str(source),
        "format": "dicom",
        "series_uid": series.uid,
        "series_description": str(header.get("SeriesDescription", "")),
        "modality": str(header.get("Modality", "")),
        "study_uid": str(header.get("StudyInstanceUID", "")),
        "frame_of_reference_uid": str(header.get("FrameOfReferenceUID", "")),
        "patient_id": str(header.get("PatientID", "")),
        "sop_instance_uids": [f.sop_uid for f in layout.frames],
        "dicom_files": [str(f.path) for f in layout.frames],
    }

"""Assemble a DICOM series into a :class:`Volume`: geometry check, pixel data
(:mod:`medseg.io.dicom_pixels`), rescale slope/intercept, optional regularisation of an
irregular stack (:mod:`medseg.io.dicom_regularize`), the (i, j, k) array layout and
provenance metadata.

Values: if every frame's RescaleSlope/RescaleIntercept is the identity (or absent), the
stored integer type is kept; otherwise the output is float32 ``stored * slope + intercept``
(per frame, so CT comes out in HU). A regularised series interpolated linearly is float.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from medseg.core import Volume
from medseg.core.errors import GeometryError, ReadError
from medseg.io import dicom_regularize, dicom_series
from medseg.io.dicom_geometry import DicomFrame, SliceLayout, slice_layout
from medseg.io.dicom_pixels import read_planes
from medseg.io.dicom_regularize import Interpolation, check_interpolation
from medseg.io.dicom_series import DicomSeries, describe

log = logging.getLogger(__name__)


def read_dicom_folder(
    folder: str | Path,
    series: str | None = None,
    *,
    regularize: bool = False,
    interpolation: Interpolation = "linear",
) -> Volume:
    """Read one series from a series or study folder (recursive); see ``select_series``.

    ``regularize``/``interpolation``: see :func:`series_to_volume`.
    """
    folder = Path(folder)
    with dicom_series.malformed_header(folder), naming(folder):
        found = dicom_series.scan_folder(folder)
        chosen = dicom_series.select_series(found, series, folder)
        return series_to_volume(chosen, folder, regularize=regularize, interpolation=interpolation)


def read_dicom_file(
    path: str | Path, *, regularize: bool = False, interpolation: Interpolation = "linear"
) -> Volume:
    """Read a single DICOM file: one slice (K = 1) or an enhanced multi-frame volume."""
    path = Path(path)
    with dicom_series.malformed_header(path), naming(path):
        (found,) = dicom_series.scan_file(path)
        return series_to_volume(found, path, regularize=regularize, interpolation=interpolation)


def series_to_volume(
    series: DicomSeries,
    source: Path,
    *,
    regularize: bool = False,
    interpolation: Interpolation = "linear",
) -> Volume:
    """Check the geometry of ``series``, read its pixels and build the RAS volume.

    An irregular stack (missing slices, non-uniform spacing, gantry tilt) raises
    GeometryError unless ``regularize``: then it is resampled onto a regular orthogonal
    grid along the slice normal (``interpolation`` "linear", or "nearest" for masks), one
    warning is logged and ``meta["regularized"]`` records what was done.
    """
    interpolation = check_interpolation(interpolation)
    name = describe(series)
    header = series.header
    layout = slice_layout(series.frames, name, _single_slice_step(header), regularize=regularize)
    planes = _rescaled(layout.frames, read_planes(layout.frames, series.headers))
    meta = _meta(series, layout, source)
    plan = layout.regularization
    if plan is not None:
        fill = dicom_regularize.fill_value(planes)
        planes = dicom_regularize.regularize_planes(planes, plan, interpolation, fill)
        log.warning("%s: %s", name, dicom_regularize.summary(plan, interpolation))
        meta["regularized"] = dicom_regularize.metadata(plan, interpolation, fill)
    # a view, not a copy: (I, J, K) in Fortran order, the layout nibabel and ITK use too
    return Volume(planes.transpose(2, 1, 0)[None], layout.affine, meta)


@contextlib.contextmanager
def naming(source: Path) -> Iterator[None]:
    """Series-level errors (missing or duplicated slices, mixed sizes, irregular spacing,
    tilt) name the series; add the folder or file the user gave, for batches over many."""
    try:
        yield
    except (GeometryError, ReadError) as exc:
        if exc.path is not None:
            raise
        raise type(exc)(str(exc), source) from exc


def _single_slice_step(header: Dataset) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = header.get(keyword)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    return 1.0


def _rescaled(frames: tuple[DicomFrame, ...], planes: np.ndarray) -> np.ndarray:
    """(K, J, I) stored values, rescaled per frame to float32 if any frame needs it."""
    if any(f.slope != 1.0 or f.intercept != 0.0 for f in frames):
        slopes = np.array([f.slope for f in frames], dtype=np.float32)[:, None, None]
        intercepts = np.array([f.intercept for f in frames], dtype=np.float32)[:, None, None]
        planes = planes.astype(np.float32) * slopes + intercepts
    return planes


def _meta(series: DicomSeries, layout: SliceLayout, source: Path) -> dict:
    header = series.header
    # one source instance per k slice; none when regularisation made new slices
    frames = layout.frames if layout.regularization is None else ()
    return {
        "source": str(source),
        "format": "dicom",
        "series_uid": series.uid,
        "series_description": str(header.get("SeriesDescription", "")),
        "modality": str(header.get("Modality", "")),
        "study_uid": str(header.get("StudyInstanceUID", "")),
        "frame_of_reference_uid": str(header.get("FrameOfReferenceUID", "")),
        "patient_id": str(header.get("PatientID", "")),
        "sop_instance_uids": [f.sop_uid for f in frames],
        "dicom_files": [str(f.path) for f in frames],
    }

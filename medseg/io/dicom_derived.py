"""What every DICOM object derived from a label map needs (DICOM-SEG and RTSTRUCT output):
the source series' headers, in array-``k`` order, and a label grid that is that series'.

The label volume must lie on the grid of the source series that :func:`read_volume`
produced: array axes ``(i, j, k)`` = (column, row, slice in ``meta["dicom_files"]`` order).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from medseg.core import Volume, geometry
from medseg.core.errors import GeometryError, OutputError, ReadError

POSITION_TOLERANCE_MM = 0.01
#: Patient/study attributes (DICOM Type 2: present, possibly empty) copied from the source;
#: real series often omit some of them.
UNRECORDED_METHOD = "not recorded in the source images"
TYPE2_COPIED = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex",
                "AccessionNumber", "StudyID", "StudyDate", "StudyTime")


def source_headers(labels: Volume, what: str) -> list[Dataset]:
    """The source series' headers (no pixels) of a label map, Type 2 attributes filled.

    ``what`` names the output in messages ("DICOM-SEG", "RTSTRUCT").
    """
    files: Sequence[str] = labels.meta.get("dicom_files") or []
    if labels.meta.get("regularized"):
        raise OutputError(
            f"{what} output needs one source instance per slice, but the source series was "
            "regularised (resampled between slices) when read; write NIfTI instead",
            labels.meta.get("source"),
        )
    if not files:
        raise OutputError(
            f"{what} output needs a DICOM source series (the input was not DICOM)",
            labels.meta.get("source"),
        )
    if len(set(files)) != len(files):
        raise OutputError(f"{what} output from multi-frame source files is not supported",
                          labels.meta.get("source"))
    try:
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise ReadError(f"cannot re-read a source DICOM header ({exc})",
                        labels.meta.get("source")) from exc
    for header in headers:  # copied Type 2 attributes: absent means empty
        for keyword in TYPE2_COPIED:
            if keyword not in header:
                setattr(header, keyword, "")
    return headers


def check_source_grid(labels: Volume, sources: Sequence[Dataset], what: str) -> None:
    """The label grid must be the source series grid: size and every slice position."""
    where = labels.meta.get("source")
    columns, rows, n = labels.spatial_shape
    if labels.n_channels != 1 or labels.dtype.kind not in "iub":
        raise OutputError(f"{what} output needs a one-channel integer label map, got "
                          f"{labels.n_channels} channel(s) of {labels.dtype}", where)
    if n != len(sources) or any(
        (int(s.Rows), int(s.Columns)) != (rows, columns) for s in sources
    ):
        raise GeometryError(
            f"label grid {labels.spatial_shape} does not match the source series "
            f"({len(sources)} slices of {int(sources[0].Rows)}x{int(sources[0].Columns)})", where
        )
    corners = geometry.apply_affine(
        geometry.ras_to_lps(labels.affine), np.stack([np.zeros(n), np.zeros(n), np.arange(n)], 1)
    )
    positions = np.array([[float(v) for v in s.ImagePositionPatient] for s in sources])
    error = float(np.abs(corners - positions).max())
    if error > POSITION_TOLERANCE_MM:
        raise GeometryError(
            f"label grid is {error:.3g} mm away from the source slice positions", where
        )


def check_named(labels: Volume, values: Sequence[int], where: object) -> None:
    """Every non-zero value of the label map must be among the named ``values``."""
    array = labels.array
    found = (np.flatnonzero(np.bincount(array.ravel(order="K"))) if array.dtype.kind in "ub"
             else np.unique(array))  # bincount: no sort of every voxel
    unknown = sorted(set(found.tolist()) - {0, *values})
    if unknown:
        raise OutputError(f"label values {unknown} have no name in the dataset labels", where)


def copy_deidentification(target: Dataset, source: Dataset) -> None:
    """Carry the source's de-identification flag over, with the method DICOM requires next
    to it (Type 1C); real de-identified series often omit the method."""
    removed = source.get("PatientIdentityRemoved", target.get("PatientIdentityRemoved"))
    if removed is None:
        return
    target.PatientIdentityRemoved = removed
    for keyword in ("DeidentificationMethod", "DeidentificationMethodCodeSequence"):
        if keyword in source:
            target[keyword] = source[keyword]
    if str(removed).upper() == "YES" and not (
            "DeidentificationMethod" in target or "DeidentificationMethodCodeSequence" in target):
        target.DeidentificationMethod = UNRECORDED_METHOD


def derived_series_number(source: Dataset) -> int:
    """Series number of a derived series: the source's plus 1000 (a common convention)."""
    return int(getattr(source, "SeriesNumber", 0) or 0) + 1000

"""Geometry of a DICOM series: per-frame header parsing, slice order, regularity checks and
the voxel-to-RAS affine.

Index order (ITK's): ``i`` along a row (ImageOrientationPatient[0:3], spacing
PixelSpacing[1]), ``j`` down a column (IOP[3:6], spacing PixelSpacing[0]), ``k`` along the
slice normal ``row x column`` in increasing position. Slices are sorted by the projection
of ImagePositionPatient on that normal, never by file name or InstanceNumber. The affine
is built in LPS (DICOM's patient frame) and converted to RAS here, once.

A series is accepted only if every slice lies on one regular, orthogonal grid within
``SLICE_TOLERANCE`` of the smallest voxel size; otherwise a GeometryError says why
(duplicated positions, missing slices, non-uniform spacing, gantry tilt, mixed sizes or
orientations). With ``regularize=True``, missing slices, non-uniform spacing and gantry tilt
are instead planned for resampling onto a regular grid (:mod:`medseg.io.dicom_regularize`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

from medseg.core import geometry
from medseg.core.errors import GeometryError, ReadError
from medseg.io.dicom_regularize import Regularization, plan_regularization

SLICE_TOLERANCE = 0.05  # allowed off-grid slice displacement, as a fraction of the voxel size
ORIENTATION_TOLERANCE = 1e-3  # max difference of direction cosines within one series
SPACING_TOLERANCE = 1e-3  # relative PixelSpacing difference within one series
REGULARIZE_HINT = (
    "(read with regularize=True, --regularize-slices or the pipeline key "
    "dataset.regularize_slices to resample it onto a regular grid)"
)


@dataclass(frozen=True)
class DicomFrame:
    """One 2D image of a series, with the geometry and rescale of that image."""

    path: Path
    frame: int | None  # index in a multi-frame file; None for a single-frame file
    sop_uid: str
    position: tuple[float, ...]  # ImagePositionPatient (LPS mm)
    orientation: tuple[float, ...]  # ImageOrientationPatient: row then column cosines
    pixel_spacing: tuple[float, ...]  # (between rows, between columns) in mm
    rows: int
    columns: int
    slope: float = 1.0
    intercept: float = 0.0


@dataclass(frozen=True)
class SliceLayout:
    """A series' frames in array-``k`` order and the grid they lie on."""

    frames: tuple[DicomFrame, ...]
    affine: np.ndarray  # voxel -> RAS
    spacing: tuple[float, float, float]
    # how to resample ``frames`` onto the affine's grid; None when they lie on it already
    regularization: Regularization | None = None


# --- header parsing -------------------------------------------------------------------------


def frames_of(path: Path, header: Dataset) -> tuple[DicomFrame, ...]:
    """The 2D frames stored in one file (enhanced multi-frame: one per functional group)."""
    if int(header.Rows) < 1 or int(header.Columns) < 1:
        raise ReadError(f"invalid image size: {header.Rows} rows x {header.Columns} columns",
                        path)
    if "PerFrameFunctionalGroupsSequence" in header:
        return _enhanced_frames(path, header)
    if _n_frames(header) != 1:
        raise ReadError("multi-frame DICOM without per-frame functional groups (unsupported)", path)
    slope = decimals(header, "RescaleSlope", path)
    intercept = decimals(header, "RescaleIntercept", path)
    return (
        DicomFrame(
            path=path, frame=None, sop_uid=str(header.get("SOPInstanceUID", "")),
            position=_required(header, "ImagePositionPatient", 3, path),
            orientation=_required(header, "ImageOrientationPatient", 6, path),
            pixel_spacing=_required(header, "PixelSpacing", 2, path),
            rows=int(header.Rows), columns=int(header.Columns),
            slope=slope[0] if slope else 1.0, intercept=intercept[0] if intercept else 0.0,
        ),
    )  # fmt: skip


def _enhanced_frames(path: Path, header: Dataset) -> tuple[DicomFrame, ...]:
    """Frames of an enhanced multi-frame file, from its functional group sequences."""
    shared_seq = header.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else Dataset()
    per_frame = header.PerFrameFunctionalGroupsSequence
    if len(per_frame) != _n_frames(header):
        raise ReadError(
            f"{len(per_frame)} per-frame functional groups for {_n_frames(header)} frames", path
        )
    frames = []
    for index, item in enumerate(per_frame):
        position = functional_value(item, shared, "PlanePositionSequence", "ImagePositionPatient")
        orientation = functional_value(
            item, shared, "PlaneOrientationSequence", "ImageOrientationPatient"
        )
        spacing = functional_value(item, shared, "PixelMeasuresSequence", "PixelSpacing")
        if position is None or orientation is None or spacing is None:
            raise ReadError(f"frame {index + 1} lacks plane position/orientation/spacing", path)
        slope = functional_value(item, shared, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = functional_value(
            item, shared, "PixelValueTransformationSequence", "RescaleIntercept"
        )
        frames.append(
            DicomFrame(
                path=path, frame=index, sop_uid=str(header.get("SOPInstanceUID", "")),
                position=_floats(position, 3, path), orientation=_floats(orientation, 6, path),
                pixel_spacing=_floats(spacing, 2, path),
                rows=int(header.Rows), columns=int(header.Columns),
                slope=1.0 if slope in (None, "") else float(slope),
                intercept=0.0 if intercept in (None, "") else float(intercept),
            )
        )  # fmt: skip
    return tuple(frames)


# --- layout ---------------------------------------------------------------------------------


def slice_layout(
    frames: Sequence[DicomFrame],
    name: str,
    single_slice_step: float = 1.0,
    *,
    regularize: bool = False,
) -> SliceLayout:
    """Sort ``frames`` along the slice normal, check they form a regular grid, build the affine.

    ``name`` (the series) is used in error messages; ``single_slice_step`` is the k spacing
    used when there is only one frame. With ``regularize``, missing slices, non-uniform
    spacing and gantry tilt give a layout whose ``regularization`` says how to resample the
    frames onto the returned (orthogonal, uniform) grid instead of an error.
    """
    bad_spacing = [f.pixel_spacing for f in frames if min(f.pixel_spacing) <= 0]
    if bad_spacing:
        raise GeometryError(f"{name}: PixelSpacing must be positive: {list(bad_spacing[0])}")
    _check_uniform(frames, name)
    first = frames[0]
    row, col = _unit_cosines(first.orientation, name)
    normal = np.cross(row, col)
    positions = np.array([f.position for f in frames], dtype=np.float64)
    order = np.argsort(positions @ normal, kind="stable")
    positions = positions[order]
    sorted_frames = tuple(frames[i] for i in order)
    row_spacing, col_spacing = first.pixel_spacing
    if len(frames) == 1:
        step, plan = float(single_slice_step), None
    else:
        axes = (row, col, normal)
        step, plan = _slice_step(positions, axes, (col_spacing, row_spacing), name, regularize)
    lin = np.column_stack([row * col_spacing, col * row_spacing, normal * step])
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = lin
    affine_lps[:3, 3] = positions[0]
    try:
        affine = geometry.check_affine(geometry.lps_to_ras(affine_lps), "affine")
    except GeometryError as exc:
        raise GeometryError(f"{name}: {exc}") from exc
    return SliceLayout(sorted_frames, affine, (col_spacing, row_spacing, step), plan)


def _check_uniform(frames: Sequence[DicomFrame], name: str) -> None:
    sizes = Counter((f.columns, f.rows) for f in frames)
    if len(sizes) > 1:
        listed = ", ".join(f"{c}x{r} ({n} frames)" for (c, r), n in sizes.most_common())
        raise GeometryError(f"{name}: mixed image sizes (columns x rows) in one series: {listed}")
    orientations = np.array([f.orientation for f in frames])
    if np.max(np.abs(orientations - orientations[0])) > ORIENTATION_TOLERANCE:
        n_distinct = len({tuple(np.round(o, 3)) for o in orientations})
        raise GeometryError(
            f"{name}: mixed slice orientations in one series ({n_distinct} different "
            "ImageOrientationPatient values; e.g. a localizer mixed with the stack)"
        )
    spacings = np.array([f.pixel_spacing for f in frames])
    if np.max(np.abs(spacings / spacings[0] - 1)) > SPACING_TOLERANCE:
        raise GeometryError(
            f"{name}: mixed PixelSpacing in one series "
            f"({sorted({tuple(s) for s in spacings.round(4).tolist()})})"
        )


def _unit_cosines(orientation: Sequence[float], name: str) -> tuple[np.ndarray, np.ndarray]:
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    norms = np.linalg.norm(row), np.linalg.norm(col)
    if min(norms) < 0.5 or abs(float(row @ col)) / (norms[0] * norms[1]) > 1e-3:
        raise GeometryError(f"{name}: invalid ImageOrientationPatient {list(orientation)}")
    return row / norms[0], col / norms[1]


def _slice_step(
    positions: np.ndarray,
    axes: tuple[np.ndarray, np.ndarray, np.ndarray],
    spacing_ij: tuple[float, float],
    name: str,
    regularize: bool,
) -> tuple[float, Regularization | None]:
    """The k step (mm) of sorted slice ``positions`` and, if they need it, their regularisation.

    ``axes`` are the unit row, column and normal vectors. Duplicated positions always
    raise; gantry tilt, missing slices and non-uniform spacing raise unless ``regularize``.
    A regular stack's step is the first-to-last distance over n - 1 (ITK's definition).
    """
    row, col, normal = axes
    depth = positions @ normal
    mean_step = (depth[-1] - depth[0]) / (len(depth) - 1)
    tol = SLICE_TOLERANCE * min(*spacing_ij, mean_step) if mean_step > 0 else 0.0
    _check_distinct(np.diff(depth), tol, name)
    in_plane = positions - positions[0] - np.outer(depth - depth[0], normal)
    problem = _tilt_problem(in_plane, depth, tol) or _spacing_problem(depth, tol)
    if problem is None:
        return float(np.linalg.norm(positions[-1] - positions[0]) / (len(depth) - 1)), None
    if not regularize:
        raise GeometryError(f"{name}: {problem} {REGULARIZE_HINT}")
    shifts_mm = np.column_stack([in_plane @ row, in_plane @ col])
    plan = plan_regularization(depth, shifts_mm, spacing_ij, tol)
    return plan.step, plan


def _check_distinct(steps: np.ndarray, tol: float, name: str) -> None:
    duplicated = int(np.sum(steps <= max(tol, 1e-6)))
    if duplicated:
        raise GeometryError(
            f"{name}: {duplicated + 1} or more slices share a position along the slice normal "
            "(several echoes, phases or time points in one series?)"
        )


def _tilt_problem(in_plane: np.ndarray, depth: np.ndarray, tol: float) -> str | None:
    """Why slices whose in-plane offsets from the first one are ``in_plane`` are sheared."""
    if np.max(np.linalg.norm(in_plane, axis=1)) <= tol:
        return None
    tilt = np.degrees(np.arctan2(np.linalg.norm(in_plane[-1]), depth[-1] - depth[0]))
    return (
        f"slice positions are not along the slice normal (gantry tilt or sheared stack, "
        f"{tilt:.2f} degrees); refusing rather than returning a sheared geometry"
    )


def _spacing_problem(depth: np.ndarray, tol: float) -> str | None:
    """Why slices at sorted ``depth`` are not evenly spaced, if they are not."""
    regular = np.linspace(depth[0], depth[-1], len(depth))
    if np.max(np.abs(depth - regular)) <= tol:
        return None
    return _irregularity(np.diff(depth))


def _irregularity(steps: np.ndarray) -> str:
    typical = float(np.median(steps))
    gaps = np.flatnonzero(steps > 1.5 * typical)
    if gaps.size and np.allclose(steps[steps <= 1.5 * typical], typical, rtol=0.05):
        where = ", ".join(f"after slice {g + 1} ({steps[g]:.3g} mm)" for g in gaps[:5])
        return f"missing slice(s): gaps of more than the {typical:.4g} mm step {where}"
    return (
        f"non-uniform slice spacing (steps from {steps.min():.4g} to {steps.max():.4g} mm, "
        f"median {typical:.4g} mm)"
    )


# --- small parsing helpers ------------------------------------------------------------------


def _n_frames(header: Dataset) -> int:
    value = header.get("NumberOfFrames")
    return int(value) if value not in (None, "") else 1


def decimals(header: Dataset, keyword: str, path: Path) -> tuple[float, ...] | None:
    """Numbers of a (usually DS/IS) element, or None when absent or empty.

    Raw, not yet converted decimal strings are split and parsed directly: pydicom's
    per-value DSfloat conversion was a visible part of header time (benchmarks/dicom_read.py).
    """
    element = header.get_item(keyword)
    if element is None:
        return None
    # implicit-VR files leave raw elements without a VR: the dictionary's is the one
    vr = element.VR or dictionary_VR(element.tag)
    if isinstance(element.value, bytes) and vr in ("DS", "IS"):
        values: list[Any] = element.value.split(b"\\")
    else:
        converted = header.get(keyword)
        is_many = isinstance(converted, Sequence) and not isinstance(converted, str | bytes)
        values = list(converted) if is_many else [converted]
    values = [v for v in values if not _blank(v)]
    return _floats(values, None, path) if values else None


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str | bytes) and not value.strip())


def _required(header: Dataset, keyword: str, count: int, path: Path) -> tuple[float, ...]:
    numbers = decimals(header, keyword, path)
    if numbers is None:
        raise ReadError(f"DICOM image lacks {keyword}; cannot place it in space", path)
    return _floats(numbers, count, path)


def functional_value(item: Dataset, shared: Dataset, sequence: str, keyword: str) -> Any:
    """``keyword`` of functional group ``sequence``: the frame's ``item``, else ``shared``."""
    for source in (item, shared):
        seq = source.get(sequence)
        if seq and keyword in seq[0]:
            return seq[0].get(keyword)
    return None


def _floats(value: Any, count: int | None, path: Path) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ReadError(f"malformed numeric header value {value!r}", path) from exc
    if (count is not None and len(numbers) != count) or not all(np.isfinite(numbers)):
        expected = "finite numbers" if count is None else f"{count} finite numbers"
        raise ReadError(f"expected {expected}, got {value!r}", path)
    return numbers

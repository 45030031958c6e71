"""Opt-in regularisation of an irregular DICOM slice stack onto a regular orthogonal grid.

Used only when a caller reads with ``regularize=True`` (cf. 3D Slicer's "acquisition
geometry regularization"); by default :mod:`medseg.io.dicom_geometry` refuses such series.
Two cases are handled, alone or together:

- **missing slices / non-uniform spacing** along the slice normal: output slices at a
  uniform step (the median source step) from the first slice on, each one interpolated
  between the two source slices that bracket its depth (linear, or the nearest of the two);
- **gantry tilt / sheared stack** (parallel slices whose origins drift across the slice
  plane): every source slice is first shifted in-plane onto the orthogonal grid through
  the first slice, then interpolated along the normal as above.

The functions here are pure numpy/scipy on planes stacked as ``(K, rows, columns)``; the
affine of the result is built by ``dicom_geometry`` (origin at the first source slice,
orthogonal axes, the chosen step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from medseg.core.errors import InputError

Interpolation = Literal["linear", "nearest"]
INTERPOLATIONS: tuple[str, ...] = get_args(Interpolation)
MISSING_SLICES = "missing slices"
NON_UNIFORM = "non-uniform slice spacing"
TILT = "gantry tilt"
TIE_TOLERANCE = 1e-6  # nearest: weights this close to 0.5 are a tie (DS-rounded positions)


@dataclass(frozen=True)
class Regularization:
    """How an irregular, sorted slice stack maps onto a regular orthogonal grid.

    Depths are in mm along the slice normal from the first source slice; ``shifts`` are
    the in-plane offsets of each source slice from the orthogonal grid, in voxels
    ``(i, j)`` (all zero unless the stack is tilted).
    """

    source_depths: np.ndarray  # (n,) increasing, source_depths[0] == 0
    target_depths: np.ndarray  # (m,) uniform, target_depths[0] == 0
    step: float  # mm between output slices
    shifts: np.ndarray  # (n, 2) voxels along (i, j)
    tilt_degrees: float
    reasons: tuple[str, ...]  # of MISSING_SLICES, NON_UNIFORM, TILT
    tolerance: float  # mm: a target this close to a source slice copies it unchanged


def check_interpolation(interpolation: str) -> Interpolation:
    """``interpolation`` if it is one of :data:`INTERPOLATIONS`, else :class:`InputError`."""
    if interpolation not in INTERPOLATIONS:
        raise InputError(
            f"slice interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}"
        )
    return interpolation  # type: ignore[return-value]


def plan_regularization(
    depths: np.ndarray, shifts_mm: np.ndarray, spacing_ij: tuple[float, float], tolerance: float
) -> Regularization:
    """The regular grid for slices at increasing ``depths`` offset in-plane by ``shifts_mm``.

    ``shifts_mm`` (n, 2) are mm along the row and column directions relative to the first
    slice; offsets within ``tolerance`` (mm) count as none, as when reading regular series.
    """
    depths = np.asarray(depths, dtype=np.float64) - depths[0]
    shifts_mm = np.asarray(shifts_mm, dtype=np.float64)
    tilted = float(np.max(np.linalg.norm(shifts_mm, axis=1))) > tolerance
    if not tilted:
        shifts_mm = np.zeros_like(shifts_mm)
    step, targets = regular_depths(depths, tolerance)
    reasons = ((TILT,) if tilted else ()) + _depth_reasons(depths, targets, tolerance)
    return Regularization(
        source_depths=depths,
        target_depths=targets,
        step=step,
        shifts=shifts_mm / np.asarray(spacing_ij, dtype=np.float64),
        tilt_degrees=float(np.degrees(np.arctan2(np.linalg.norm(shifts_mm[-1]), depths[-1]))),
        reasons=reasons,
        tolerance=tolerance,
    )


def regular_depths(depths: np.ndarray, tolerance: float = 0.0) -> tuple[float, np.ndarray]:
    """Uniform output depths from the first to (at most) the last of sorted ``depths``.

    The step is the median of the observed steps, so a stack with a few missing slices
    keeps its native step. When the first-to-last span is a whole number of such steps
    (within ``tolerance`` mm), the step is refined to divide it exactly, so the last output
    slice falls on the last source slice; otherwise the grid stops before it (never
    extrapolates).
    """
    depths = np.asarray(depths, dtype=np.float64)
    step = float(np.median(np.diff(depths)))
    span = float(depths[-1] - depths[0])
    n_steps = round(span / step)
    if abs(span - n_steps * step) <= tolerance and n_steps > 0:
        step = span / n_steps
    else:
        n_steps = int(np.floor(span / step))
    return step, depths[0] + step * np.arange(n_steps + 1)


def interpolation_weights(
    source_depths: np.ndarray, target_depths: np.ndarray, tolerance: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each target depth: the bracketing source slices and the weight of the upper one.

    ``value = (1 - weight) * source[lower] + weight * source[upper]``. A target within
    ``tolerance`` of a source slice gets weight exactly 0 or 1 (the slice is copied).
    Targets must lie within the source range; ``source_depths`` must increase.
    """
    source = np.asarray(source_depths, dtype=np.float64)
    target = np.asarray(target_depths, dtype=np.float64)
    lower = np.clip(np.searchsorted(source, target, side="right") - 1, 0, len(source) - 2)
    upper = lower + 1
    below, above = target - source[lower], source[upper] - target
    weight = np.clip(below / (source[upper] - source[lower]), 0.0, 1.0)
    weight[above <= tolerance] = 1.0
    weight[below <= tolerance] = 0.0
    return lower, upper, weight


def interpolate_depths(
    planes: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    weight: np.ndarray,
    interpolation: Interpolation = "linear",
) -> np.ndarray:
    """Planes ``(K, rows, columns)`` at new depths from :func:`interpolation_weights`.

    ``nearest`` picks the closer of the two source slices (the lower one on a tie, within
    :data:`TIE_TOLERANCE`) and keeps the dtype; ``linear`` returns floats (float32 for up to
    16-bit data). Slices with weight 0 or 1 are copied; memory beyond the output is one plane.
    """
    if interpolation == "nearest":
        return planes[np.where(weight > 0.5 + TIE_TOLERANCE, upper, lower)]
    dtype = np.result_type(planes.dtype, np.float32)
    out = np.empty((len(weight), *planes.shape[1:]), dtype=dtype)
    for t, (below, above, w) in enumerate(zip(lower, upper, weight, strict=True)):
        if w in (0.0, 1.0):
            out[t] = planes[above if w else below]
        else:
            out[t] = (1 - w) * planes[below] + w * planes[above]
    return out


def shift_planes(
    planes: np.ndarray, shifts: np.ndarray, interpolation: Interpolation, fill: float
) -> np.ndarray:
    """Move each plane ``k`` by ``shifts[k]`` voxels along (i, j); ``fill`` outside it.

    Output voxel ``(j, i)`` of plane ``k`` takes the source value at ``(j, i) - shift``
    (spline order 1 or 0); nothing is interpolated across the plane's edge.
    """
    from scipy import ndimage  # imported when used: reading starts without it

    order = 0 if interpolation == "nearest" else 1
    dtype = planes.dtype if order == 0 else np.result_type(planes.dtype, np.float32)
    out = np.empty(planes.shape, dtype=dtype)
    for k, (shift_i, shift_j) in enumerate(shifts):
        ndimage.shift(planes[k], (shift_j, shift_i), output=out[k], order=order,
                      mode="constant", cval=fill)
    return out


def regularize_planes(
    planes: np.ndarray,
    plan: Regularization,
    interpolation: Interpolation = "linear",
    fill: float = 0.0,
) -> np.ndarray:
    """Resample sorted source planes ``(n, rows, columns)`` onto ``plan``'s regular grid.

    ``fill`` is the value of grid voxels that no (tilted) source slice covers.
    """
    if TILT in plan.reasons:
        planes = shift_planes(planes, plan.shifts, interpolation, fill)
    weights = interpolation_weights(plan.source_depths, plan.target_depths, plan.tolerance)
    return interpolate_depths(planes, *weights, interpolation)


def fill_value(planes: np.ndarray) -> float:
    """Value given to grid voxels outside every tilted source slice: the series' minimum
    (0 for masks and most MR, air or padding for CT)."""
    return float(planes.min())


def summary(plan: Regularization, interpolation: Interpolation) -> str:
    """One line saying what regularisation did, for the log."""
    n, m = len(plan.source_depths), len(plan.target_depths)
    parts = []
    if TILT in plan.reasons:
        parts.append(f"gantry tilt of {plan.tilt_degrees:.2f} degrees resampled onto the "
                     "orthogonal grid")
    if MISSING_SLICES in plan.reasons:
        parts.append(f"{m - n} missing slice(s) interpolated")
    if NON_UNIFORM in plan.reasons:
        steps = np.diff(plan.source_depths)
        parts.append(f"non-uniform slice spacing ({steps.min():.4g} to {steps.max():.4g} mm) "
                     "resampled to a uniform step")
    return f"{', '.join(parts)} ({interpolation}), step {plan.step:.4g} mm, {n} → {m} slices"


def metadata(plan: Regularization, interpolation: Interpolation, fill: float) -> dict[str, Any]:
    """JSON-serialisable record of the regularisation, for ``Volume.meta["regularized"]``."""
    record: dict[str, Any] = {
        "reasons": list(plan.reasons),
        "interpolation": interpolation,
        "step_mm": plan.step,
        "source_slices": len(plan.source_depths),
        "slices": len(plan.target_depths),
        "source_depths_mm": [round(float(d), 6) for d in plan.source_depths],
    }
    if TILT in plan.reasons:
        record["tilt_degrees"] = round(plan.tilt_degrees, 6)
        record["fill_value"] = fill
    return record


def _depth_reasons(depths: np.ndarray, targets: np.ndarray, tolerance: float) -> tuple[str, ...]:
    """Missing slices when every source depth lies on the output grid, else non-uniform."""
    nearest = np.min(np.abs(depths[:, None] - targets[None, :]), axis=1)
    on_grid = bool(np.all(nearest <= tolerance))
    if on_grid and len(targets) == len(depths):
        return ()
    return (MISSING_SLICES,) if on_grid else (NON_UNIFORM,)

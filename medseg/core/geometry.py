"""Pure geometry helpers on 4x4 voxel-to-world affines (world = RAS, millimetres).

Conventions: a volume's spatial axes are (i, j, k); ``affine @ [i, j, k, 1]`` gives the RAS
position of a voxel centre, as in NIfTI/nibabel. DICOM/ITK use LPS; convert with
:func:`lps_to_ras` exactly once, at the I/O boundary.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from nibabel import orientations as ornt

from medseg.core.errors import GeometryError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """Convert an LPS voxel-to-world affine into the RAS one (its own inverse)."""
    return LPS_TO_RAS @ np.asarray(affine_lps, dtype=np.float64)


ras_to_lps = lps_to_ras


def spacing(affine: np.ndarray) -> tuple[float, ...]:
    """Voxel size along each array axis (length of each affine column)."""
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))


def origin(affine: np.ndarray) -> tuple[float, ...]:
    """World position of the centre of voxel (0, 0, 0)."""
    return tuple(float(v) for v in np.asarray(affine)[:3, 3])


def direction(affine: np.ndarray) -> np.ndarray:
    """3x3 matrix whose columns are the unit world directions of the array axes."""
    lin = np.asarray(affine, dtype=np.float64)[:3, :3]
    return lin / np.linalg.norm(lin, axis=0)


def axcodes(affine: np.ndarray) -> tuple[str, ...]:
    """Closest anatomical orientation codes, e.g. ('R', 'A', 'S') for a RAS-aligned grid."""
    return tuple(ornt.aff2axcodes(affine))


def is_oblique(affine: np.ndarray, tol: float = 1e-4) -> bool:
    """True when some array axis is not parallel to a world axis."""
    d = np.abs(direction(affine))
    return bool(np.any((d > tol) & (d < 1 - tol)))


def compose_affine(
    direction_cols: np.ndarray, voxel_spacing: Sequence[float], world_origin: Sequence[float]
) -> np.ndarray:
    """Build an affine from unit direction columns, spacing and origin."""
    aff = np.eye(4)
    aff[:3, :3] = np.asarray(direction_cols, dtype=np.float64) * np.asarray(voxel_spacing)
    aff[:3, 3] = world_origin
    return aff


def check_affine(affine: np.ndarray, what: str = "affine") -> np.ndarray:
    """Return ``affine`` as float64 4x4, raising GeometryError if it is unusable."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise GeometryError(f"{what} must be 4x4, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise GeometryError(f"{what} contains NaN or Inf")
    if not np.allclose(a[3], [0, 0, 0, 1]):
        raise GeometryError(f"{what} last row must be [0, 0, 0, 1], got {a[3].tolist()}")
    lin = a[:3, :3]
    if np.any(np.linalg.norm(lin, axis=0) < 1e-8) or abs(np.linalg.det(lin)) < 1e-12:
        raise GeometryError(f"{what} is singular (zero voxel size or collinear axes)")
    return a


def same_grid(
    shape_a: Sequence[int],
    affine_a: np.ndarray,
    shape_b: Sequence[int],
    affine_b: np.ndarray,
    atol: float = 1e-3,
) -> bool:
    """True when two grids have the same spatial shape and (within ``atol`` mm) affine."""
    return tuple(shape_a) == tuple(shape_b) and bool(
        np.allclose(affine_a, affine_b, atol=atol, rtol=0)
    )


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (..., 3) points through a 4x4 affine."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]


# --- reorientation --------------------------------------------------------------------------


def orientation_to_ras(affine: np.ndarray) -> np.ndarray:
    """nibabel orientation array that takes the volume's axes to the closest RAS order."""
    return ornt.io_orientation(affine)


def reorient_array(array: np.ndarray, orientation: np.ndarray) -> np.ndarray:
    """Permute/flip the spatial axes of a channel-first array by a nibabel orientation."""
    moved = np.moveaxis(array, 0, -1)  # channels last: nibabel acts on the leading axes
    out = ornt.apply_orientation(moved, orientation)
    return np.ascontiguousarray(np.moveaxis(out, -1, 0))


def reoriented_affine(
    affine: np.ndarray, orientation: np.ndarray, spatial_shape: Sequence[int]
) -> np.ndarray:
    """Affine of the array produced by :func:`reorient_array` (same world positions)."""
    return np.asarray(affine) @ ornt.inv_ornt_aff(orientation, tuple(spatial_shape))


def invert_orientation(orientation: np.ndarray) -> np.ndarray:
    """The orientation that undoes ``orientation`` (from its output back to its input)."""
    n = len(orientation)
    identity = np.column_stack([np.arange(n), np.ones(n)])
    # ornt_transform(start, end) maps an array in `start` orientation to `end`: the
    # reoriented array is in RAS (identity) and the source was in `orientation`.
    return ornt.ornt_transform(identity, np.asarray(orientation))


def to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reorient a channel-first array to the closest RAS axis order.

    Returns ``(array_ras, affine_ras, orientation)``; undo with :func:`from_ras`.
    """
    o = orientation_to_ras(affine)
    return reorient_array(array, o), reoriented_affine(affine, o, array.shape[1:]), o


def from_ras(array_ras: np.ndarray, orientation: np.ndarray) -> np.ndarray:
    """Undo :func:`to_ras` on an array (e.g. a prediction made on the RAS grid)."""
    return reorient_array(array_ras, invert_orientation(orientation))

"""Read an RT Structure Set (RTSTRUCT) into a label map on the grid of its image series.

Contours are polygons in patient coordinates (LPS mm). Each closed planar contour is
mapped into the series' voxel indices (through the volume's affine, LPS → RAS here, once)
and filled at voxel centres on the slice it lies on (:func:`medseg.io.contours.fill_even_odd`;
centres on the outline count as inside). The contours of one ROI on one slice combine by
the even-odd rule: a contour inside another is a hole, one inside a hole an island; that
is how structure sets store holes. Point and open (line) contours have no area: they are skipped
with a warning. An ROI without contours is kept, empty, and listed in ``Annotation.empty``.

A contour must lie in a slice plane of the series (within ``SLICE_TOLERANCE`` of a slice,
as a fraction of the slice step) and, when it names the slice image it was drawn on
(ContourImageSequence), on that image: otherwise a GeometryError names the ROI, the
contour and the problem (a missing referenced slice, a contour drawn on another grid).
Overlapping ROIs follow :mod:`medseg.io.annotation`'s overlap policies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from medseg.core import Volume, geometry
from medseg.core.errors import GeometryError, ReadError
from medseg.io.annotation import (
    RTSTRUCT_OVERLAP,
    Annotation,
    Overlap,
    build_annotation,
    select_sources,
    union,
)
from medseg.io.contours import fill_even_odd
from medseg.io.dicom_geometry import decimals
from medseg.io.dicom_reference import reference_grid, rtstruct_references
from medseg.io.dicom_series import RTSTRUCT_SOP_CLASS
from medseg.io.structures import StructuresLike

log = logging.getLogger(__name__)

CLOSED = "CLOSED_PLANAR"
SLICE_TOLERANCE = 0.25  # largest distance of a contour from its slice, in slice steps


@dataclass(frozen=True)
class Contour:
    """One contour: its geometric type, points (n, 3) in LPS mm, the image it names."""

    kind: str
    points: np.ndarray
    image_uid: str | None


@dataclass(frozen=True)
class Roi:
    """One ROI of a structure set, in file order."""

    number: int
    name: str
    contours: tuple[Contour, ...]


def read_rtstruct(
    path: str | Path,
    reference: Volume | str | Path | None = None,
    *,
    structures: StructuresLike | None = None,
    overlap: Overlap = RTSTRUCT_OVERLAP,
    per_structure: bool = False,
) -> Annotation:
    """Read the RTSTRUCT ``path`` onto the grid of the series it was drawn on.

    ``reference``: that series as a Volume (read by :func:`medseg.io.read_volume`) or a
    folder holding it; default: searched in the file's folder tree
    (:mod:`medseg.io.dicom_reference`). ``structures``: which ROIs become which label
    values (:mod:`medseg.io.structures`); default every ROI, values 1, 2, ... in file order.
    ``overlap`` and ``per_structure``: see :mod:`medseg.io.annotation`.
    """
    path = Path(path)
    ds, rois = read_structure_set(path)
    refs = rtstruct_references(ds)
    grid = reference_grid(path, refs, reference)
    chosen, sources = select_sources(structures, [r.name for r in rois], path)
    instances = _slice_of_instance(grid, refs.series)
    masks, skipped = {}, []
    for value in chosen:
        masks[value] = union([rasterize_roi(r, grid, instances, skipped, path)
                              for r in rois if r.name in sources.get(value, ())], grid)
    return build_annotation(masks, chosen, sources, [r.name for r in rois], grid, path,
                            fmt="rtstruct", overlap=overlap, per_structure=per_structure,
                            skipped=skipped)


def read_structure_set(path: Path) -> tuple[Dataset, list[Roi]]:
    """The dataset and its ROIs (file order: StructureSetROISequence), contours parsed."""
    try:
        ds = pydicom.dcmread(path)
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise ReadError(f"not a readable DICOM file ({exc})", path) from exc
    if str(ds.get("SOPClassUID", "")) != RTSTRUCT_SOP_CLASS:
        raise ReadError(f"not an RT Structure Set (SOPClassUID {ds.get('SOPClassUID', '?')}, "
                        f"modality {ds.get('Modality', '?')})", path)
    contours = {int(item.get("ReferencedROINumber", -1)): item.get("ContourSequence", [])
                for item in ds.get("ROIContourSequence", [])}
    rois = []
    for item in ds.get("StructureSetROISequence", []):
        number, name = int(item.ROINumber), str(item.get("ROIName", "")).strip()
        parsed = tuple(_contour(c, name, n, path)
                       for n, c in enumerate(contours.get(number, []), start=1))
        rois.append(Roi(number, name or f"ROI {number}", parsed))
    if not rois:
        raise ReadError("RT Structure Set without any ROI", path)
    return ds, rois


def rasterize_roi(
    roi: Roi, grid: Volume, instances: dict[str, int | None], skipped: list[str],
    where: Path,
) -> np.ndarray:
    """Boolean (K, I, J) planes of one ROI on ``grid`` (its contours on one slice combined by
    the even-odd rule). ``instances``: SOP instance UID -> slice index of the grid's source
    images (None when a UID covers several slices); contours naming another UID are an error.
    """
    shape = grid.spatial_shape
    to_index = np.linalg.inv(geometry.ras_to_lps(grid.affine))
    per_slice: dict[int, list[np.ndarray]] = {}
    for n, contour in enumerate(roi.contours, start=1):
        if contour.kind != CLOSED or len(contour.points) < 3:
            skipped.append(f"ROI {roi.name!r} contour {n}: {contour.kind} with "
                           f"{len(contour.points)} point(s) has no area")
            continue
        ijk = geometry.apply_affine(to_index, contour.points)
        k = _slice_index(ijk[:, 2], contour.image_uid, instances, shape[2],
                         f"ROI {roi.name!r} contour {n}", where)
        per_slice.setdefault(k, []).append(ijk[:, :2])
    n_skipped = len(roi.contours) - sum(len(p) for p in per_slice.values())
    if n_skipped:
        log.warning("%s: ROI %r: %d point/line contour(s) skipped (no area)",
                    where, roi.name, n_skipped)
    planes = np.zeros((shape[2], shape[0], shape[1]), bool)  # slices contiguous
    for k, polygons in per_slice.items():
        planes[k] = fill_even_odd(polygons, shape[:2])
    return planes


def _slice_index(depth: np.ndarray, uid: str | None, instances: dict[str, int | None],
                 n_slices: int, label: str, where: Path) -> int:
    """The slice a contour lies on, checked against the image it names."""
    k = int(np.round(float(np.mean(depth))))
    off = float(np.max(np.abs(depth - k)))
    if uid and instances:
        if uid not in instances:
            raise GeometryError(
                f"{label} is drawn on image {uid}, which the reference series does not have "
                "(a missing slice?)", where)
        if instances[uid] is not None and instances[uid] != k:
            raise GeometryError(
                f"{label} names image {uid} (slice {instances[uid]}) but lies at slice "
                f"{depth.mean():.2f}", where)
    if off > SLICE_TOLERANCE:
        raise GeometryError(
            f"{label} is not in a slice plane of the reference series (its points are up to "
            f"{off:.2f} slice steps off slice {k}; drawn on another grid or orientation?)",
            where)
    if not 0 <= k < n_slices:
        raise GeometryError(
            f"{label} lies at slice {k}, outside the {n_slices} slices of the reference "
            "series (a missing slice?)", where)
    return k


def _slice_of_instance(grid: Volume, referenced_series: frozenset[str]) -> dict[str, int | None]:
    """UID -> slice of the grid's source images; empty when the grid is not the series the
    structure set names (its image references then say nothing about this grid)."""
    uids = list(grid.meta.get("sop_instance_uids") or [])
    if not uids or (referenced_series and grid.meta.get("series_uid") not in referenced_series):
        return {}
    out: dict[str, int | None] = {}
    for k, uid in enumerate(uids):
        out[uid] = k if uid not in out else None
    return out


def _contour(item: Dataset, roi: str, n: int, path: Path) -> Contour:
    kind = str(item.get("ContourGeometricType", "")).strip().upper()
    try:
        values = np.asarray(decimals(item, "ContourData", path) or (), np.float64)
    except ReadError as exc:
        raise ReadError(f"ROI {roi!r} contour {n}: malformed ContourData ({exc})", path) from exc
    if values.size % 3:
        raise ReadError(f"ROI {roi!r} contour {n}: ContourData must be finite x, y, z "
                        f"triplets, got {values.size} numbers", path)
    images = item.get("ContourImageSequence", [])
    uid = str(images[0].get("ReferencedSOPInstanceUID", "")) if images else ""
    return Contour(kind, values.reshape(-1, 3), uid or None)

"""Read a DICOM-SEG (binary, fractional or label-map; several segments; sparse frames) onto
the grid of the image series it segments.

highdicom decodes the object and its frames; medseg places each frame on a slice of the
reference series:

1. by the source image the frame names (DerivationImageSequence), when the reference
   series has that SOP instance;
2. otherwise by its ImagePositionPatient: the frame's origin must lie within
   ``PLACEMENT_TOLERANCE`` voxel of a slice origin of the series (real files have frame
   positions a few hundredths of a millimetre off), else a GeometryError says how far off.

Frames must share the series' orientation, pixel spacing, rows and columns. Frames absent
from a sparse SEG are empty. A fractional segment is inside where its value reaches
``FRACTIONAL_THRESHOLD`` of the maximum. Overlapping segments follow
:mod:`medseg.io.annotation` (an error by default for DICOM-SEG).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from medseg.core import Volume, geometry
from medseg.core.errors import GeometryError, ReadError
from medseg.io.annotation import (
    SEG_OVERLAP,
    Annotation,
    Overlap,
    build_annotation,
    select_sources,
    union,
)
from medseg.io.dicom_geometry import functional_value
from medseg.io.dicom_reference import reference_grid, seg_references
from medseg.io.structures import StructuresLike

log = logging.getLogger(__name__)

PLACEMENT_TOLERANCE = 0.25  # largest frame offset from a slice origin, in voxel sizes
FRACTIONAL_THRESHOLD = 0.5
ORIENTATION_TOLERANCE = 1e-3


def read_dicom_seg(
    path: str | Path,
    reference: Volume | str | Path | None = None,
    structures: StructuresLike | None = None,
    *,
    overlap: Overlap = SEG_OVERLAP,
    per_structure: bool = False,
) -> Annotation:
    """Read the DICOM-SEG ``path`` onto the grid of the series it segments.

    ``reference``, ``structures`` (matched against segment labels), ``overlap`` and
    ``per_structure``: as for :func:`medseg.io.rtstruct.read_rtstruct`. Default label values:
    segments in segment-number order, 1, 2, ...
    """
    path = Path(path)
    seg = _open(path)
    grid = reference_grid(path, seg_references(seg), reference)
    labels = {n: str(seg.get_segment_description(n).segment_label)
              for n in seg.segment_numbers}
    chosen, sources = select_sources(structures, list(labels.values()), path)
    segments = place_frames(seg, grid, path)
    masks = {v: union([segments[n] for n in labels if labels[n] in sources.get(v, ())], grid)
             for v in chosen}
    return build_annotation(masks, chosen, sources, list(labels.values()), grid, path,
                            fmt="dicom-seg", overlap=overlap, per_structure=per_structure)


def place_frames(seg: hd.seg.Segmentation, grid: Volume, path: Path) -> dict[int, np.ndarray]:
    """Segment number -> boolean (K, I, J) planes on ``grid``."""
    i, j, k = grid.spatial_shape
    if (int(seg.Columns), int(seg.Rows)) != (i, j):
        raise GeometryError(f"frames of {seg.Columns}x{seg.Rows} pixels, the reference "
                            f"series' images are {i}x{j}", path)
    shared = (seg.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    _check_plane(seg, shared, grid, path)
    place = _Placer(grid, path)
    kind = seg.segmentation_type
    masks = {n: np.zeros((k, i, j), bool) for n in seg.segment_numbers}
    for index, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        plane = seg.get_stored_frame(index, as_index=True).T  # (columns, rows) = (i, j)
        slice_k = place(item, shared, index)
        if kind == hd.seg.SegmentationTypeValues.LABELMAP:
            for number in np.unique(plane):
                if int(number) in masks:
                    masks[int(number)][slice_k] |= plane == number
            continue
        number = _segment_number(item, shared, index, path)
        if kind == hd.seg.SegmentationTypeValues.FRACTIONAL:
            inside = plane >= FRACTIONAL_THRESHOLD * float(seg.MaximumFractionalValue)
        else:
            inside = plane > 0
        masks[number][slice_k] |= inside
    return masks


class _Placer:
    """Slice index of a frame: by the source image it names, else by its position."""

    def __init__(self, grid: Volume, path: Path) -> None:
        uids = list(grid.meta.get("sop_instance_uids") or [])
        counts = Counter(uids)  # a multi-frame source names one UID for several slices
        self.slice_of = {u: n for n, u in enumerate(uids) if counts[u] == 1}
        self.to_index = np.linalg.inv(geometry.ras_to_lps(grid.affine))
        self.n_slices = grid.spatial_shape[2]
        self.spacing = np.asarray(grid.spacing)
        self.path = path

    def __call__(self, item: Dataset, shared: Dataset, index: int) -> int:
        position = functional_value(item, shared, "PlanePositionSequence", "ImagePositionPatient")
        for uid in _source_images(item):
            if uid in self.slice_of:
                k = self.slice_of[uid]
                if position is not None:
                    self._check_consistent(position, k, index)
                return k
        if position is None:
            raise GeometryError(f"frame {index + 1} names no image of the reference series and "
                                "has no ImagePositionPatient: cannot place it", self.path)
        return self._by_position(position, index)

    def _by_position(self, position: object, index: int) -> int:
        ijk = geometry.apply_affine(self.to_index, np.asarray(position, float))
        k = int(np.round(ijk[2]))
        off = np.abs(ijk - [0.0, 0.0, k])
        if np.any(off > PLACEMENT_TOLERANCE) or not 0 <= k < self.n_slices:
            mm = float(np.linalg.norm(off * self.spacing))
            raise GeometryError(
                f"frame {index + 1} at {[round(float(v), 3) for v in position]} mm lies on no "
                f"slice of the reference series (nearest slice {k} of {self.n_slices}, "
                f"{mm:.3g} mm away; tolerance {PLACEMENT_TOLERANCE} voxel)", self.path)
        return k

    def _check_consistent(self, position: object, k: int, index: int) -> None:
        ijk = geometry.apply_affine(self.to_index, np.asarray(position, float))
        if np.any(np.abs(ijk - [0.0, 0.0, k]) > PLACEMENT_TOLERANCE):
            log.warning("%s: frame %d is placed on the slice it names (%d), but its position "
                        "is %s voxels away from it", self.path, index + 1, k,
                        np.round(ijk - [0, 0, k], 3).tolist())


def _check_plane(seg: Dataset, shared: Dataset, grid: Volume, path: Path) -> None:
    """Frames must have the reference series' orientation and pixel spacing (when given)."""
    first = (seg.get("PerFrameFunctionalGroupsSequence") or [Dataset()])[0]
    orientation = functional_value(first, shared, "PlaneOrientationSequence",
                              "ImageOrientationPatient")
    lps = geometry.ras_to_lps(grid.affine)
    cosines = (lps[:3, :2] / np.linalg.norm(lps[:3, :2], axis=0)).T.ravel()
    if orientation is not None and np.max(np.abs(np.asarray(orientation, float) - cosines)) \
            > ORIENTATION_TOLERANCE:
        raise GeometryError(f"frames are oriented {list(orientation)}, the reference series "
                            f"{np.round(cosines, 4).tolist()}", path)
    spacing = functional_value(first, shared, "PixelMeasuresSequence", "PixelSpacing")
    expected = np.asarray(grid.spacing[1::-1])  # (between rows, between columns)
    if spacing is not None and np.max(np.abs(np.asarray(spacing, float) / expected - 1)) \
            > ORIENTATION_TOLERANCE:
        raise GeometryError(f"frames have pixel spacing {list(spacing)} mm, the reference "
                            f"series {expected.round(4).tolist()} mm", path)


def _segment_number(item: Dataset, shared: Dataset, index: int, path: Path) -> int:
    number = functional_value(item, shared, "SegmentIdentificationSequence",
                         "ReferencedSegmentNumber")
    if number is None:
        raise ReadError(f"frame {index + 1} names no segment", path)
    return int(number)


def _source_images(item: Dataset) -> list[str]:
    return [str(source.get("ReferencedSOPInstanceUID", ""))
            for derivation in item.get("DerivationImageSequence", [])
            for source in derivation.get("SourceImageSequence", [])]


def _open(path: Path) -> hd.seg.Segmentation:
    try:
        return hd.seg.segread(path)
    except Exception as exc:  # pydicom/highdicom raise many types for unreadable files
        raise ReadError(f"not a readable DICOM-SEG ({exc})", path) from exc

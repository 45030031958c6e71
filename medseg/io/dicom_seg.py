"""DICOM-SEG output (and read-back) for label maps predicted on a DICOM series' grid.

The label volume must lie on the grid of the source series that :func:`read_volume`
produced: array axes ``(i, j, k)`` = (column, row, slice in ``meta["dicom_files"]`` order).
Each source slice becomes one frame of a binary segmentation (highdicom), segments are
named after the dataset's labels and reference the source SOP instances.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

import medseg
from medseg.core import Volume, geometry
from medseg.core.atomic import atomic_path
from medseg.core.errors import GeometryError, OutputError, ReadError

POSITION_TOLERANCE_MM = 0.01
#: Patient/study attributes (DICOM Type 2: present, possibly empty) highdicom copies from
#: the source; real series often omit some of them.
TYPE2_COPIED = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex",
                "AccessionNumber", "StudyID", "StudyDate", "StudyTime")


def write_dicom_seg(
    labels: Volume,
    path: str | Path,
    label_names: Mapping[int, str],
    *,
    series_description: str = "medseg segmentation",
    algorithm_name: str = "medseg",
) -> None:
    """Write the label map ``labels`` as a DICOM-SEG referencing its source series.

    ``labels.meta["dicom_files"]`` lists the source files in array-``k`` order (as set by
    :func:`medseg.io.read_volume`); their headers are re-read. ``label_names`` maps label
    values to segment names (0 = background is not a segment). Written atomically.
    """
    sources = _source_headers(labels)
    _check_grid(labels, sources)
    values = sorted(v for v in label_names if v != 0)
    frames = _segment_frames(labels, values, path)
    descriptions = _descriptions(values, label_names, algorithm_name)
    with warnings.catch_warnings():  # the source headers' name style is not ours to fix
        warnings.filterwarnings("ignore", message=".*intended person name", category=UserWarning)
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(),
            series_number=_series_number(sources[0]), sop_instance_uid=hd.UID(),
            instance_number=1, manufacturer="medseg", manufacturer_model_name=algorithm_name,
            software_versions=medseg.__version__, device_serial_number="0",
            series_description=series_description, omit_empty_frames=False,
        )
    with atomic_path(path) as tmp:
        seg.save_as(tmp)


def _segment_frames(labels: Volume, values: Sequence[int], path: str | Path) -> np.ndarray:
    """(slices, rows, columns) segment numbers 1..N for label values ``values``."""
    unknown = sorted(set(np.unique(labels.array).tolist()) - {0, *values})
    if unknown:
        raise OutputError(f"label values {unknown} have no name in the dataset labels", path)
    segment_of = np.zeros(max([*values, int(labels.array.max()), 0]) + 1, dtype=np.uint8)
    segment_of[list(values)] = np.arange(1, len(values) + 1)
    return np.ascontiguousarray(segment_of[labels.array[0]].transpose(2, 1, 0))


def _descriptions(
    values: Sequence[int], label_names: Mapping[int, str], algorithm_name: str
) -> list[hd.seg.SegmentDescription]:
    """One automatic segment per label value, named after the dataset label."""
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, version=medseg.__version__,
        family=codes.cid7162.ArtificialIntelligence,
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=str(label_names[v]),
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_id=f"label {v}", tracking_uid=hd.UID(),
        )
        for n, v in enumerate(values, start=1)
    ]


def read_dicom_seg(
    path: str | Path, reference: Volume, label_names: Mapping[int, str] | None = None
) -> Volume:
    """Decode a DICOM-SEG into a label :class:`Volume` on the grid of its source series.

    ``reference`` is the source image volume (``meta["sop_instance_uids"]`` in ``k``
    order). Segments become the label value whose name in ``label_names`` matches the
    segment label, else their segment number.
    """
    path = Path(path)
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # pydicom/highdicom raise many types for unreadable files
        raise ReadError(f"not a readable DICOM-SEG ({exc})", path) from exc
    uids = list(reference.meta.get("sop_instance_uids") or [])
    if len(uids) != reference.spatial_shape[2]:
        raise GeometryError("reference volume has no SOP instance UID per slice", path)
    referenced = {s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence}
    if reference.meta.get("series_uid") not in referenced:
        raise GeometryError(
            f"DICOM-SEG references series {sorted(referenced)}, not the reference series "
            f"{reference.meta.get('series_uid')}", path,
        )
    numbers = seg.get_pixels_by_source_instance(
        uids, combine_segments=True, assert_missing_frames_are_empty=True, dtype=np.uint16
    )
    lookup = _segment_values(seg, label_names)
    array = lookup[numbers].transpose(2, 1, 0)[None]
    dtype = np.uint8 if lookup.max() < 256 else np.uint16
    return Volume(array.astype(dtype), reference.affine.copy(),
                  {"source": str(path), "format": "dicom-seg",
                   "series_uid": str(seg.SeriesInstanceUID)})


def _segment_values(seg: hd.seg.Segmentation, names: Mapping[int, str] | None) -> np.ndarray:
    """Lookup table: segment number -> label value."""
    by_name = {str(n): int(v) for v, n in (names or {}).items()}
    numbers = list(seg.segment_numbers)
    lookup = np.arange(max(numbers, default=0) + 1)
    for number in numbers:
        label = str(seg.get_segment_description(number).segment_label)
        lookup[number] = by_name.get(label, number)
    return lookup


def _source_headers(labels: Volume) -> list[Dataset]:
    files: Sequence[str] = labels.meta.get("dicom_files") or []
    if labels.meta.get("regularized"):
        raise OutputError(
            "DICOM-SEG output needs one source instance per slice, but the source series was "
            "regularised (resampled between slices) when read; write NIfTI instead",
            labels.meta.get("source"),
        )
    if not files:
        raise OutputError(
            "DICOM-SEG output needs a DICOM source series (the input was not DICOM)",
            labels.meta.get("source"),
        )
    if len(set(files)) != len(files):
        raise OutputError("DICOM-SEG output from multi-frame source files is not supported",
                          labels.meta.get("source"))
    try:
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise ReadError(f"cannot re-read a source DICOM header ({exc})",
                        labels.meta.get("source")) from exc
    for header in headers:  # highdicom copies these Type 2 attributes; absent means empty
        for keyword in TYPE2_COPIED:
            if keyword not in header:
                setattr(header, keyword, "")
    return headers


def _check_grid(labels: Volume, sources: Sequence[Dataset]) -> None:
    """The label grid must be the source series grid: size and every slice position."""
    where = labels.meta.get("source")
    columns, rows, n = labels.spatial_shape
    if labels.n_channels != 1 or labels.dtype.kind not in "iub":
        raise OutputError(f"a DICOM-SEG needs a one-channel integer label map, got "
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


def _series_number(source: Dataset) -> int:
    """Series number of the segmentation: the source's plus 1000 (a common convention)."""
    return int(getattr(source, "SeriesNumber", 0) or 0) + 1000

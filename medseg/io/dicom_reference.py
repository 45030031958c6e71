"""Find the image series an annotation file (RTSTRUCT or DICOM-SEG) was drawn on.

An annotation names what it was drawn on: a FrameOfReferenceUID, usually the
SeriesInstanceUID, and the SOP instances of the slices. The series is chosen among
candidates in this order: the referenced SeriesInstanceUID; the series holding most of the
referenced SOP instances; the only series of the referenced frame of reference. Without a
reference given, the annotation's own folder and then its parent folders (up to
``SEARCH_LEVELS``) are searched, so ``Patient/RTSTRUCT/rs.dcm`` finds ``Patient/CT/``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from medseg.core import Volume
from medseg.core.errors import GeometryError, InputError, ReadError
from medseg.io import dicom_series, dicom_volume
from medseg.io.dicom_series import DicomSeries

log = logging.getLogger(__name__)

SEARCH_LEVELS = 2  # the annotation's folder, its parent and its grandparent


@dataclass(frozen=True)
class References:
    """What an annotation file says it was drawn on."""

    frames_of_reference: frozenset[str]
    series: frozenset[str]
    instances: frozenset[str]

    def describe(self) -> str:
        series = ", ".join(sorted(self.series)) or "not named"
        return f"series {series}, frame of reference {', '.join(sorted(self.frames_of_reference))}"


@dataclass(frozen=True)
class SeriesKey:
    """The identity of a candidate image series."""

    uid: str
    frame_of_reference: str
    instances: frozenset[str]


@dataclass(frozen=True)
class AnnotationInfo:
    """What dataset discovery needs of an annotation file, without reading its contours or
    pixels: its format, structure names in file order and references."""

    path: Path
    format: str
    names: tuple[str, ...]
    refs: References


def annotation_info(path: Path, fmt: str) -> AnnotationInfo:
    """Names and references of the RTSTRUCT or DICOM-SEG ``path`` (format ``fmt``)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if fmt == "rtstruct":
            names = tuple(str(r.get("ROIName", "")).strip() or f"ROI {r.ROINumber}"
                          for r in ds.get("StructureSetROISequence", []))
            return AnnotationInfo(path, fmt, names, rtstruct_references(ds))
        segments = sorted(ds.get("SegmentSequence", []), key=lambda s: int(s.SegmentNumber))
        names = tuple(str(s.get("SegmentLabel", "")) for s in segments)
        return AnnotationInfo(path, fmt, names, seg_references(ds))
    except (OSError, ValueError, TypeError, AttributeError,
            pydicom.errors.InvalidDicomError) as exc:
        raise ReadError(f"cannot read the {fmt} header ({exc})", path) from exc


def rtstruct_references(ds: Dataset) -> References:
    """References of an RT Structure Set (its frame of reference, series and contour images)."""
    frames = {str(ds.get("FrameOfReferenceUID", ""))}
    series: set[str] = set()
    instances: set[str] = set()
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        frames.add(str(frame.get("FrameOfReferenceUID", "")))
        for study in frame.get("RTReferencedStudySequence", []):
            for item in study.get("RTReferencedSeriesSequence", []):
                series.add(str(item.get("SeriesInstanceUID", "")))
                instances.update(_uids(item.get("ContourImageSequence", [])))
    for roi in ds.get("StructureSetROISequence", []):
        frames.add(str(roi.get("ReferencedFrameOfReferenceUID", "")))
    for roi in ds.get("ROIContourSequence", []):
        for contour in roi.get("ContourSequence", []):
            instances.update(_uids(contour.get("ContourImageSequence", [])))
    return _references(frames, series, instances)


def seg_references(ds: Dataset) -> References:
    """References of a DICOM-SEG (its frame of reference, source series and instances)."""
    series: set[str] = set()
    instances: set[str] = set()
    for item in ds.get("ReferencedSeriesSequence", []):
        series.add(str(item.get("SeriesInstanceUID", "")))
        instances.update(_uids(item.get("ReferencedInstanceSequence", [])))
    return _references({str(ds.get("FrameOfReferenceUID", ""))}, series, instances)


def match_series(refs: References, candidates: Sequence[SeriesKey]) -> int | None:
    """Index of the candidate the annotation was drawn on, or None (see module docstring)."""
    for i, candidate in enumerate(candidates):
        if candidate.uid in refs.series:
            return i
    overlap = [len(refs.instances & c.instances) for c in candidates]
    if overlap and max(overlap) > 0:
        return overlap.index(max(overlap))
    same_frame = [i for i, c in enumerate(candidates)
                  if c.frame_of_reference in refs.frames_of_reference]
    return same_frame[0] if len(same_frame) == 1 else None


def series_key(series: DicomSeries) -> SeriesKey:
    return SeriesKey(series.uid, str(series.header.get("FrameOfReferenceUID", "")),
                     frozenset(f.sop_uid for f in series.frames))


def reference_grid(
    annotation: Path, refs: References, reference: Volume | str | Path | None
) -> Volume:
    """The image volume the annotation is read onto: ``reference`` itself (a Volume), the
    referenced series found in ``reference`` (a folder), or in the annotation's folder tree."""
    if isinstance(reference, Volume):
        check_frame_of_reference(annotation, refs, reference)
        return reference
    folders = [Path(reference)] if reference is not None else _search_folders(annotation)
    for folder in folders:
        found = _find_in(folder, refs, annotation, required=reference is not None)
        if found is not None:
            with dicom_series.malformed_header(folder):
                volume = dicom_volume.series_to_volume(found, folder)
            check_frame_of_reference(annotation, refs, volume)
            return volume
    raise InputError(
        f"the image series it was drawn on ({refs.describe()}) is not in "
        f"{', '.join(str(f) for f in folders)}; give it with --reference SERIES_DIR "
        "(or reference=)", annotation)


def check_frame_of_reference(annotation: Path, refs: References, volume: Volume) -> None:
    """Refuse a reference volume of another frame of reference than the annotation's."""
    frame = str(volume.meta.get("frame_of_reference_uid", ""))
    if frame and refs.frames_of_reference and frame not in refs.frames_of_reference:
        raise GeometryError(
            f"drawn in frame of reference {', '.join(sorted(refs.frames_of_reference))}, but "
            f"the reference series {volume.meta.get('series_uid', '')} is in {frame}",
            annotation)
    uid = volume.meta.get("series_uid")
    if refs.series and uid and uid not in refs.series:
        log.info("%s: reading onto series %s, not the referenced %s (placed by position)",
                 annotation, uid, ", ".join(sorted(refs.series)))


def _find_in(folder: Path, refs: References, annotation: Path,
             required: bool) -> DicomSeries | None:
    try:
        with dicom_series.malformed_header(folder):
            found = (dicom_series.scan_folder(folder) if folder.is_dir()
                     else dicom_series.scan_file(folder))
    except InputError:
        if required:
            raise
        return None
    index = match_series(refs, [series_key(s) for s in found])
    if index is None and required:
        listing = "; ".join(dicom_series.describe(s) for s in found)
        raise InputError(f"no series of {folder} matches what it was drawn on "
                         f"({refs.describe()}); series there: {listing}", annotation)
    return None if index is None else found[index]


def _search_folders(annotation: Path) -> list[Path]:
    folder = annotation.absolute().parent
    return [folder, *list(folder.parents)[:SEARCH_LEVELS]]


def _uids(items: Iterable[Dataset]) -> set[str]:
    return {str(i.get("ReferencedSOPInstanceUID", "")) for i in items} - {""}


def _references(frames: set[str], series: set[str], instances: set[str]) -> References:
    return References(frozenset(frames - {""}), frozenset(series - {""}),
                      frozenset(instances - {""}))

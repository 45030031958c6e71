"""DICOM discovery: find files, read only the header tags needed, group frames into series
and select one series.

A *frame* is one 2D image: a single-frame file, or one frame of an enhanced multi-frame
file (its position and orientation come from the functional group sequences). Pixel data
are deferred: the header pass records where they are and :mod:`medseg.io.dicom_pixels`
reads them only for the chosen series.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.tag import Tag

from medseg.core.errors import GeometryError, InputError, ReadError
from medseg.io import dicom_geometry
from medseg.io.dicom_geometry import DicomFrame

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
SEGMENTATION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
#: annotation objects (labels, not images): SOP class -> the format medseg reads them as
ANNOTATION_SOP_CLASSES = {
    SEGMENTATION_SOP_CLASS: "dicom-seg",
    "1.2.840.10008.5.1.4.1.1.66.7": "dicom-seg",  # Label Map Segmentation
    RTSTRUCT_SOP_CLASS: "rtstruct",
}
HEADER_KEYWORDS = [
    "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
    "FrameOfReferenceUID", "PatientID", "Modality", "SeriesDescription", "SeriesNumber",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns",
    "NumberOfFrames", "RescaleSlope", "RescaleIntercept", "SliceThickness",
    "SpacingBetweenSlices", "SamplesPerPixel", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "PhotometricInterpretation", "PlanarConfiguration",
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence",
    "ExtendedOffsetTable", "ExtendedOffsetTableLengths", "PixelData",
]  # fmt: skip
HEADER_TAGS = [Tag(keyword) for keyword in HEADER_KEYWORDS]  # pydicom re-parses keywords per file
HEAD_BYTES = 64 * 2**10  # a DICOM header nearly always fits; longer ones are re-read
_DEFER_BYTES = 2048  # values larger than this (the pixel data) are read only when used
MAX_THREADS = 8
PARALLEL_MIN_FILES = 64  # below this, thread start-up costs more than it saves
# what pydicom, int() and float() raise on malformed values (converted lazily, when used;
# sequences are parsed then too, hence the I/O errors)
MALFORMED = (TypeError, ValueError, OverflowError, NotImplementedError, BytesLengthException,
             OSError, EOFError, struct.error, zlib.error)
log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class DicomSeries:
    """The frames of one SeriesInstanceUID and the header of its first file."""

    uid: str
    header: Dataset
    frames: tuple[DicomFrame, ...]
    headers: dict[Path, Dataset]

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(dict.fromkeys(f.path for f in self.frames))


@dataclass(frozen=True)
class SeriesInfo:
    """What ``list_series`` reports about one series."""

    uid: str
    description: str
    modality: str
    shape: tuple[int, int, int]  # (I, J, K) = (Columns, Rows, frames)
    spacing: tuple[float, float, float]  # (i, j, k) mm; k from the slice positions
    n_files: int
    folder: Path
    frame_of_reference_uid: str
    files: tuple[Path, ...]
    problem: str | None = None  # why it cannot be read as a regular volume, if it cannot


def is_dicom_file(path: str | Path) -> bool:
    """True for a file with the DICOM preamble (``DICM`` at byte 128) or a .dcm name."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def read_header(path: Path) -> Dataset | None:
    """Read the tags medseg needs; None if ``path`` is not DICOM.

    Large values (the pixel data) are skipped: the header keeps their file offset, and
    :mod:`medseg.io.dicom_pixels` reads them from ``path`` only for the chosen series.
    """
    size = path.stat().st_size
    if size == 0:
        if path.suffix.lower() == ".dcm":
            raise ReadError("empty DICOM file (0 bytes)", path)
        return None
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
    except OSError as exc:
        raise ReadError(f"cannot open file ({exc.strerror or type(exc).__name__})", path) from exc
    try:
        header = _parse_header(path, head, size)
    except InvalidDicomError:
        if path.suffix.lower() == ".dcm":
            raise ReadError("not a valid DICOM file", path) from None
        return None
    except PermissionError as exc:
        raise ReadError(f"cannot open file ({exc.strerror or 'permission denied'})", path) from exc
    except MALFORMED as exc:
        raise ReadError(f"corrupt or truncated DICOM file ({type(exc).__name__})", path) from exc
    if not _is_dicomdir(header) and not _complete(header):
        # pydicom stops quietly at a cut-off file
        raise ReadError("corrupt or truncated DICOM file (no SOPClassUID/SeriesInstanceUID)", path)
    return header


def _complete(header: Dataset) -> bool:
    """SOPClassUID and SeriesInstanceUID are mandatory in every object; de-identified
    exports may drop the UIDs, so a header that reaches its pixel data counts too."""
    if "SOPClassUID" in header and "SeriesInstanceUID" in header:
        return True
    return "PixelData" in header and "Rows" in header


def _parse_header(path: Path, head: bytes, size: int) -> Dataset:
    """Parse ``head`` (the first ``HEAD_BYTES``) in memory; the file if the header is longer.

    One buffered read makes pydicom's many small reads far cheaper than on a file
    (benchmarks/dicom_read.py). Offsets in a buffer that starts at byte 0 are file offsets.
    """
    try:
        header = _dcmread(io.BytesIO(head))
        if len(head) == size or "PixelData" in header:
            return header
    except InvalidDicomError:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError):
        if len(head) == size:
            raise
    return _dcmread(path)  # the header runs past the first HEAD_BYTES


def _dcmread(source: io.BytesIO | Path) -> Dataset:
    return pydicom.dcmread(source, defer_size=_DEFER_BYTES, specific_tags=HEADER_TAGS)


@contextlib.contextmanager
def malformed_header(path: Path) -> Iterator[None]:
    """Turn the errors of malformed header values into a ReadError naming ``path``.

    pydicom converts values lazily, so a corrupt element (unknown VR, text in a number,
    several values where one is expected) raises one of ``MALFORMED`` when first used.
    """
    try:
        yield
    except MALFORMED as exc:
        text = str(exc).strip().splitlines()
        detail = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
        raise ReadError(f"malformed DICOM header ({detail})", path) from exc


def annotation_format(header: Dataset | None) -> str | None:
    """"rtstruct" or "dicom-seg" for an annotation object's header, else None."""
    if header is None:
        return None
    return ANNOTATION_SOP_CLASSES.get(str(header.get("SOPClassUID", "")))


def read_headers(paths: Sequence[Path]) -> list[Dataset | None]:
    """Read the headers of many files, in input order (in threads for large folders)."""
    return parallel_map(read_header, paths)


def parallel_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(x) for x in items]``, run in a thread pool when there are many items.

    Threads overlap file I/O (cold caches, network drives); pydicom parsing itself holds
    the GIL, so small folders are read serially, which is faster on a warm cache.
    """
    workers = min(MAX_THREADS, os.cpu_count() or 1, len(items))
    if workers < 2 or len(items) < PARALLEL_MIN_FILES:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def scan_folder(folder: str | Path) -> list[DicomSeries]:
    """Every image series found under ``folder`` (recursively), ordered by folder and number."""
    return scan_folder_with_annotations(folder)[0]


def scan_folder_with_annotations(
    folder: str | Path,
) -> tuple[list[DicomSeries], list[tuple[Path, str]]]:
    """Every image series under ``folder`` and every annotation file there (path and
    format, "rtstruct" or "dicom-seg"), from one pass over the headers."""
    folder = Path(folder)
    files = _candidate_files(folder)
    if not files:
        raise ReadError("folder is empty (no files found recursively)", folder)
    headers = read_headers(files)
    images = {p: h for p, h in zip(files, headers, strict=True) if _is_image(h)}
    if not images:
        raise ReadError(_no_images_message(headers), folder)
    _check_no_pixelless_members(files, headers, images)
    annotations = [(p, fmt) for p, h in zip(files, headers, strict=True)
                   if (fmt := annotation_format(h)) is not None]
    return _group(images), annotations


def scan_file(path: str | Path) -> list[DicomSeries]:
    """The one-file series of a single DICOM image file."""
    path = Path(path)
    return _group({path: _single_header(path)})


def list_series(path: str | Path) -> list[SeriesInfo]:
    """Describe every DICOM image series under a folder (or the series of one file)."""
    path = Path(path)
    if not path.exists():
        raise ReadError("no such file or folder", path)
    series = scan_folder(path) if path.is_dir() else scan_file(path)
    return [series_info(s) for s in series]


def series_info(series: DicomSeries) -> SeriesInfo:
    """Summarise a series; geometry problems are reported in ``problem``, not raised."""
    first = series.frames[0]
    files = series.files
    folders = {p.parent for p in files}
    try:
        layout = dicom_geometry.slice_layout(series.frames, describe(series))
        spacing = layout.spacing
        problem = None
        files = tuple(dict.fromkeys(f.path for f in layout.frames))
    except GeometryError as exc:
        spacing = (first.pixel_spacing[1], first.pixel_spacing[0], float("nan"))
        problem = str(exc)
    return SeriesInfo(
        uid=series.uid,
        description=str(series.header.get("SeriesDescription", "")),
        modality=str(series.header.get("Modality", "")),
        shape=(first.columns, first.rows, len(series.frames)),
        spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        n_files=len(files),
        folder=min(folders) if len(folders) == 1 else Path(os.path.commonpath(list(folders))),
        frame_of_reference_uid=str(series.header.get("FrameOfReferenceUID", "")),
        files=files,
        problem=problem,
    )


def select_series(series: Sequence[DicomSeries], selector: str | None, where: Path) -> DicomSeries:
    """Pick one series by UID or by an unambiguous description (exact, then substring)."""
    if selector is None:
        if len(series) == 1:
            return series[0]
        raise InputError(
            f"{len(series)} series found; choose one with a series selector (UID or "
            f"description): {_listing(series)}",
            where,
        )
    for matcher in (_uid_match, _exact_description, _substring_description):
        hits = [s for s in series if matcher(s, selector)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise InputError(f"series selector {selector!r} is ambiguous: {_listing(hits)}", where)
    raise InputError(f"no series matches {selector!r}; available: {_listing(series)}", where)


def describe(series: DicomSeries) -> str:
    """Short human name of a series for error messages: 'description' (UID)."""
    desc = str(series.header.get("SeriesDescription", "")).strip() or "no description"
    return f"series '{desc}' ({series.uid})"


# --- internals ------------------------------------------------------------------------------


def _candidate_files(folder: Path) -> list[Path]:
    return sorted(
        Path(root) / name
        for root, _dirs, names in os.walk(folder)
        for name in names
        if not name.startswith(".")
    )


def _single_header(path: Path) -> Dataset:
    header = read_header(path)
    if header is None:
        raise ReadError("not a DICOM file", path)
    if not _is_image(header):
        raise ReadError("DICOM file holds no image (no pixel data or not an image object)", path)
    return header


def _is_image(header: Dataset | None) -> bool:
    if header is None or _is_dicomdir(header):
        return False
    if str(header.get("SOPClassUID", "")) in ANNOTATION_SOP_CLASSES:
        return False  # labels, read by medseg.io.dicom_seg_read and medseg.io.rtstruct
    return "Rows" in header and "Columns" in header and "PixelData" in header


def _check_no_pixelless_members(
    files: Sequence[Path], headers: Sequence[Dataset | None], images: dict[Path, Dataset]
) -> None:
    """A file of an image series without image data means a broken (truncated?) series."""
    image_uids = {str(h.get("SeriesInstanceUID", "") or "").strip() for h in images.values()}
    image_uids.discard("")  # files without a UID are grouped by geometry instead
    for path, header in zip(files, headers, strict=True):
        if header is None or path in images or _is_dicomdir(header):
            continue
        if str(header.get("SeriesInstanceUID", "")) in image_uids:
            raise ReadError(
                "file belongs to an image series but has no image data (truncated or missing "
                f"PixelData/Rows/Columns); series {header.SeriesInstanceUID}",
                path,
            )


def _is_dicomdir(header: Dataset) -> bool:
    meta = getattr(header, "file_meta", None)
    return meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS


def _no_images_message(headers: Iterable[Dataset | None]) -> str:
    headers = list(headers)
    n_dicomdir = sum(1 for h in headers if h is not None and _is_dicomdir(h))
    n_other = sum(1 for h in headers if h is not None and not _is_dicomdir(h))
    n_foreign = sum(1 for h in headers if h is None)
    if n_dicomdir and not n_other:
        return "folder holds only a DICOMDIR index, no DICOM image files"
    return (
        f"no DICOM images found ({len(headers)} files: {n_foreign} not DICOM, "
        f"{n_other} DICOM without pixel data or not images, {n_dicomdir} DICOMDIR)"
    )


def _group(images: dict[Path, Dataset]) -> list[DicomSeries]:
    by_uid: dict[str, list[Path]] = {}
    anonymous: dict[tuple, list[Path]] = {}
    for path, header in images.items():
        uid = str(header.get("SeriesInstanceUID", "") or "").strip()
        if uid:
            by_uid.setdefault(uid, []).append(path)
        else:
            anonymous.setdefault(_fallback_key(path, header), []).append(path)
    for key, paths in anonymous.items():
        log.warning("%s: %d image file(s) without SeriesInstanceUID (de-identified export?) "
                    "grouped as one series by folder, frame of reference, orientation and "
                    "size", key[0], len(paths))
        by_uid[_derived_uid(key)] = paths
    series = []
    for uid, paths in by_uid.items():
        frames = tuple(f for p in paths for f in _frames_of(p, images[p]))
        headers = {p: images[p] for p in paths}
        series.append(DicomSeries(uid, images[paths[0]], frames, headers))
    return sorted(series, key=lambda s: (str(s.files[0].parent), _number(s.header), s.uid))


def _derived_uid(key: tuple) -> str:
    """A stable UID (2.25 + 128 bits of a hash) standing in for a missing series UID."""
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:32]
    return f"2.25.{int(digest, 16)}"


def _fallback_key(path: Path, header: Dataset) -> tuple:
    """What groups image files that lack a SeriesInstanceUID, as SimpleITK and dcm2niix do:
    folder, FrameOfReferenceUID, orientation (to 1e-3) and image size."""
    with malformed_header(path):
        orientation = dicom_geometry.decimals(header, "ImageOrientationPatient", path)
        rows, columns = int(header.get("Rows") or 0), int(header.get("Columns") or 0)
    rounded = tuple(round(v, 3) + 0.0 for v in orientation) if orientation else None
    frame = str(header.get("FrameOfReferenceUID", "") or "").strip()
    return (str(path.parent), frame, rounded, rows, columns)


def _frames_of(path: Path, header: Dataset) -> tuple[DicomFrame, ...]:
    with malformed_header(path):
        return dicom_geometry.frames_of(path, header)


def _number(header: Dataset) -> int:
    try:
        return int(header.get("SeriesNumber") or 0)
    except (TypeError, ValueError):
        return 0


def _uid_match(series: DicomSeries, selector: str) -> bool:
    return series.uid == selector.strip()


def _exact_description(series: DicomSeries, selector: str) -> bool:
    description = str(series.header.get("SeriesDescription", "")).strip().lower()
    return description == selector.strip().lower()


def _substring_description(series: DicomSeries, selector: str) -> bool:
    return selector.strip().lower() in str(series.header.get("SeriesDescription", "")).lower()


def _listing(series: Iterable[DicomSeries]) -> str:
    return "; ".join(f"{describe(s)}, {len(s.files)} files" for s in series)

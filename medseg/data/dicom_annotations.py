"""DICOM studies labelled by annotation files: every RTSTRUCT (``label_source="rtstruct"``)
or DICOM-SEG (``"dicom-seg"``) under the root is one case, on the image series it was drawn
on.

Discovery rule (explicit, logged, and listed by :func:`describe_annotation_cases`):

1. the image series is the one the file references (SeriesInstanceUID, else its SOP
   instances, else the only series of its frame of reference;
   :func:`medseg.io.dicom_reference.match_series`);
2. channels: that series alone, named by its modality ("CT", "MR", ...), or the
   SeriesDescriptions ``channels`` lists, among the series of the same study, frame of
   reference and grid;
3. label values: the ``structures`` in order (:class:`medseg.io.Structure`: a name and
   aliases/regular expressions, since centres spell ROI names differently); without them,
   the names found in every file (ignoring case, spaces, ``_`` and ``-``), in first-file
   order. Each file records which of its ROIs/segments became which value
   (``Case.label_rois``); a structure a file lacks is absent from that case's label map,
   never painted as something else. Files with none of the structures are skipped.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from medseg.core.errors import DatasetError
from medseg.data.dataset import Case, Dataset
from medseg.data.dicom_study import StudySeries, describe_pairs, study_series, unique_ids
from medseg.io import dicom_series
from medseg.io.dicom_reference import AnnotationInfo, SeriesKey, annotation_info, match_series
from medseg.io.structures import (
    Structure,
    StructuresLike,
    match_structures,
    squash,
    structures_by_value,
)

log = logging.getLogger(__name__)


def load_annotated_study(
    root: str | Path,
    label_source: str,
    structures: StructuresLike | None = None,
    channels: Sequence[str] | None = None,
    overlap: str | None = None,
    name: str | None = None,
) -> Dataset:
    """Cases from every ``label_source`` file ("rtstruct" or "dicom-seg") under ``root``."""
    root = Path(root).absolute()
    found, annotations = dicom_series.scan_folder_with_annotations(root)
    series = study_series(found)
    files = [annotation_info(p, fmt) for p, fmt in annotations if fmt == label_source]
    if not files:
        formats = sorted({fmt for _, fmt in annotations}) or ["none"]
        raise DatasetError(f"no {label_source} file found (annotation files there: "
                           f"{', '.join(formats)})", root)
    wanted = structures_by_value(structures) if structures else common_structures(files, root)
    cases = [c for f in files
             if (c := _case(f, series, wanted, channels, overlap, root)) is not None]
    if not cases:
        raise DatasetError(f"no {label_source} file has one of the structures "
                           f"{[s.name for s in wanted.values()]} on a usable image series "
                           "(see the warnings)", root)
    modality = {s.uid: s.modality for s in series}
    first = modality[cases[0].image_series[0] or ""]
    kept = []
    for case in cases:
        if channels or modality[case.image_series[0] or ""] == first:
            kept.append(case)
        else:
            log.warning("%s: skipped: drawn on a %s series, the dataset's first case on %s",
                        case.label, modality[case.image_series[0] or ""], first)
    return Dataset(
        name=name or root.name, root=root,
        labels={0: "background", **{v: s.name for v, s in wanted.items()}},
        channels=dict(enumerate(channels)) if channels else {0: first or "image"},
        cases=tuple(unique_ids(kept)),
    )


def common_structures(files: Sequence[AnnotationInfo], root: Path) -> dict[int, Structure]:
    """The names found in every file (compared squashed), values in first-file order."""
    shared = set.intersection(*({squash(n) for n in f.names} for f in files))
    names = [n for n in dict.fromkeys(files[0].names) if squash(n) in shared]
    if not names:
        raise DatasetError("the annotation files have no structure name in common; list the "
                           "structures to use (dataset.structures / --structures)", root)
    return {v: Structure(n) for v, n in enumerate(dict.fromkeys(names), start=1)}


def describe_dataset(dataset: Dataset) -> list[str]:
    """What DICOM discovery chose, one line per case: the mask series paired with the image
    series, or which ROI/segment of which annotation file became which label."""
    return describe_pairs(dataset) + describe_annotation_cases(dataset)


def describe_annotation_cases(dataset: Dataset) -> list[str]:
    """One line per annotation case: its file, which ROI became which label, what is
    missing, and the image series."""
    lines = []
    for case in (c for c in dataset.cases if c.label_format):
        taken: dict[int, list[str]] = {}
        for value, roi in case.label_rois:
            taken.setdefault(value, []).append(roi)
        parts = [f"{v} {dataset.labels[v]} <- {' + '.join(repr(r) for r in rois)}"
                 for v, rois in sorted(taken.items())]
        missing = [n for v, n in sorted(dataset.labels.items()) if v and v not in taken]
        images = ", ".join(f"{d}={uid}" for d, uid in zip(dataset.channels.values(),
                                                          case.image_series, strict=True))
        lines.append(f"{case.case_id}: {case.label_format} {case.label}: {'; '.join(parts)}"
                     + (f"; missing {', '.join(missing)}" if missing else "")
                     + f" | images {images}")
    return lines


def _case(info: AnnotationInfo, series: list[StudySeries], wanted: dict[int, Structure],
          channels: Sequence[str] | None, overlap: str | None, root: Path) -> Case | None:
    keys = [SeriesKey(s.uid, s.frame_of_reference, s.instances) for s in series]
    index = match_series(info.refs, keys)
    if index is None:
        log.warning("%s: skipped: the image series it was drawn on (%s) is not under %s",
                    info.path, info.refs.describe(), root)
        return None
    images = _channels(series[index], series, channels, info.path)
    found = match_structures(wanted, info.names)
    if images is None or not found:
        if not found:
            log.warning("%s: skipped: none of the structures %s among its names %s",
                        info.path, [s.name for s in wanted.values()], list(info.names))
        return None
    case = Case(
        _case_id(info.path, images[0].folder, root), tuple(s.folder for s in images),
        info.path, image_series=tuple(s.uid for s in images), label_format=info.format,
        label_rois=tuple((v, n) for v, names in found.items() for n in names),
        label_overlap=overlap)
    log.info("case %s: %s", case.case_id, ", ".join(
        f"{wanted[v].name} <- {list(n)}" for v, n in found.items()))
    return case


def _channels(anchor: StudySeries, series: list[StudySeries], channels: Sequence[str] | None,
              where: Path) -> list[StudySeries] | None:
    if not channels:
        return [anchor]
    candidates = {s.description: s for s in series
                  if s.study_uid == anchor.study_uid and s.same_grid(anchor)
                  and s.frame_of_reference == anchor.frame_of_reference}
    missing = [d for d in channels if d not in candidates]
    if missing:
        log.warning("%s: skipped: no series %s on the grid of the series it was drawn on",
                    where, missing)
        return None
    return [candidates[d] for d in channels]


def _case_id(annotation: Path, image_folder: Path, root: Path) -> str:
    common = Path(os.path.commonpath([annotation.parent, image_folder]))
    rel = common.relative_to(root) if common != root and root in common.parents else None
    return re.sub(r"[^A-Za-z0-9.-]+", "_", str(rel or root.name)).strip("_")


"""DICOM studies with mask series: each case is a study's image series paired with the
mask series that shares their FrameOfReferenceUID and voxel grid.

Pairing rule (explicit, and reported):
1. a series is a *mask* when its SeriesDescription matches ``mask_pattern`` (case-insensitive
   regular expression, compared with ``_``, ``-`` and spaces removed; default ``MaskTumor``);
2. a non-mask series of the same study is a *channel candidate* when it has the mask's
   FrameOfReferenceUID and the same grid (rows, columns, pixel spacing, orientation and
   slice positions, within 1e-3 mm);
3. channels are named by SeriesDescription; unless ``channels`` lists the descriptions to
   use, the dataset keeps the descriptions found in every study, sorted by name.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from medseg.core import geometry
from medseg.core.errors import DatasetError, GeometryError
from medseg.data.dataset import Case, Dataset
from medseg.io import dicom_geometry, dicom_series, is_dicom_file

log = logging.getLogger(__name__)

DEFAULT_MASK_PATTERN = "MaskTumor"


@dataclass(frozen=True)
class StudySeries:
    """One DICOM series as far as pairing is concerned (headers only, no pixel data)."""

    uid: str
    study_uid: str
    description: str
    modality: str
    frame_of_reference: str
    folder: Path
    shape: tuple[int, int, int]
    affine: np.ndarray
    instances: frozenset[str] = frozenset()  # SOP instance UIDs

    def same_grid(self, other: StudySeries) -> bool:
        return geometry.same_grid(self.shape, self.affine, other.shape, other.affine)


def is_dicom_study(root: Path) -> bool:
    """True when some file under ``root`` is a DICOM file."""
    return any(p.is_file() and is_dicom_file(p) for p in root.rglob("*"))


def load_dicom_study(
    root: str | Path,
    mask_pattern: str = DEFAULT_MASK_PATTERN,
    channels: Sequence[str] | None = None,
    name: str | None = None,
) -> Dataset:
    """Discover studies under ``root`` and pair image series with their mask series."""
    root = Path(root).absolute()
    series = scan_series(root)
    if not series:
        raise DatasetError("no DICOM series found", root)
    pattern = re.compile(_squash(mask_pattern), re.IGNORECASE)
    masks = [s for s in series if pattern.search(_squash(s.description))]
    if not masks:
        found = sorted({s.description for s in series})
        raise DatasetError(
            f"no mask series matches {mask_pattern!r}; series found: {', '.join(found)}", root)
    candidates = {m.uid: _channel_candidates(m, series, masks) for m in masks}
    chosen = list(channels) if channels else _common_descriptions(candidates.values())
    if not chosen:
        raise DatasetError("no image series shares a grid with every mask series", root)
    cases = [c for m in masks if (c := _case(m, candidates[m.uid], chosen, root)) is not None]
    cases = unique_ids(cases)
    if not cases:
        raise DatasetError(f"no study has all channels {chosen} next to its mask", root)
    modality = {s.description: s.modality for s in series}
    return Dataset(
        name=name or root.name, root=root,
        labels={0: "background", 1: masks[0].description},
        channels={i: ("CT" if modality.get(d) == "CT" else d) for i, d in enumerate(chosen)},
        cases=tuple(cases),
    )


def scan_series(root: Path) -> list[StudySeries]:
    """Every regular image series under ``root``; irregular ones are skipped with a warning."""
    return study_series(dicom_series.scan_folder(root))


def study_series(found: Iterable[dicom_series.DicomSeries]) -> list[StudySeries]:
    """The regular series among ``found``; irregular ones are skipped with a warning."""
    out = []
    for series in found:
        try:
            layout = dicom_geometry.slice_layout(series.frames, dicom_series.describe(series))
        except GeometryError as exc:
            log.warning("skipping %s: %s", dicom_series.describe(series), exc)
            continue
        first = layout.frames[0]
        h = series.header
        folders = {f.path.parent for f in layout.frames}
        out.append(StudySeries(
            uid=series.uid, study_uid=str(h.get("StudyInstanceUID", "")),
            description=str(h.get("SeriesDescription", "")), modality=str(h.get("Modality", "")),
            frame_of_reference=str(h.get("FrameOfReferenceUID", "")),
            folder=folders.pop() if len(folders) == 1 else Path(os.path.commonpath(folders)),
            shape=(first.columns, first.rows, len(layout.frames)), affine=layout.affine,
            instances=frozenset(f.sop_uid for f in layout.frames),
        ))
    return out


def describe_pairs(dataset: Dataset) -> list[str]:
    """One line per DICOM mask-series case naming the image series paired with the mask."""
    return [
        f"{c.case_id}: mask {c.label_series} <- images "
        + ", ".join(f"{d}={uid}" for d, uid in zip(dataset.channels.values(), c.image_series,
                                                    strict=True))
        for c in dataset.cases if c.label_series
    ]


def _channel_candidates(
    mask: StudySeries, series: Iterable[StudySeries], masks: list[StudySeries]
) -> dict[str, StudySeries]:
    mask_uids = {m.uid for m in masks}
    return {
        s.description: s for s in series
        if s.uid not in mask_uids and s.study_uid == mask.study_uid
        and s.frame_of_reference == mask.frame_of_reference and s.same_grid(mask)
    }


def _common_descriptions(candidates: Iterable[dict[str, StudySeries]]) -> list[str]:
    sets = [set(c) for c in candidates]
    return sorted(set.intersection(*sets)) if sets else []


def _case(mask: StudySeries, candidates: dict[str, StudySeries], chosen: list[str],
          root: Path) -> Case | None:
    missing = [d for d in chosen if d not in candidates]
    if missing:
        log.warning("mask series %s (%s): no series %s on its grid; study skipped",
                    mask.description, mask.folder, missing)
        return None
    images = [candidates[d] for d in chosen]
    case_id = _case_id(mask, root)
    log.info("case %s: mask %r paired with %s", case_id, mask.description,
             ", ".join(f"{s.description!r}" for s in images))
    return Case(case_id, tuple(s.folder for s in images), mask.folder,
                image_series=tuple(s.uid for s in images), label_series=mask.uid)


def _case_id(mask: StudySeries, root: Path) -> str:
    rel = mask.folder.parent.relative_to(root) if mask.folder.parent != root else Path(root.name)
    return re.sub(r"[^A-Za-z0-9.-]+", "_", str(rel)).strip("_")


def unique_ids(cases: list[Case]) -> list[Case]:
    """Suffix ``_2``, ``_3``... to ids shared by several masks of one study folder."""
    seen: dict[str, int] = {}
    out = []
    for case in cases:
        seen[case.case_id] = seen.get(case.case_id, 0) + 1
        n = seen[case.case_id]
        out.append(case if n == 1 else replace(case, case_id=f"{case.case_id}_{n}"))
    return out


def _squash(text: str) -> str:
    return re.sub(r"[\s_\-]+", "", text)

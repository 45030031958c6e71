"""What reading an annotation file (RTSTRUCT or DICOM-SEG) gives, and how overlapping
structures become one label map.

Overlap policies (``overlap=``), one source of truth for the readers, the CLI and pipelines:

- ``"smaller"`` (RTSTRUCT default): where structures overlap, the one with fewer voxels
  wins (a tumour inside a lung stays tumour, a cord inside a body outline stays cord);
  equal sizes: the later label value wins;
- ``"later"``: the structure with the higher label value wins (the order you list them);
- ``"error"`` (DICOM-SEG default): any overlap is an error naming the structures.

``per_structure=True`` skips all of this: one 0/1 mask per structure, channel ``c`` being
label value ``values[c]``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from medseg.core import Volume
from medseg.core.errors import InputError, ReadError
from medseg.io import dicom_series
from medseg.io.structures import Structure, StructuresLike, match_structures, structures_by_value

ANNOTATION_FORMATS = ("rtstruct", "dicom-seg")
SIDECAR_IMAGE_SUFFIXES = (".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
Overlap = Literal["smaller", "later", "error"]
OVERLAP_POLICIES: tuple[str, ...] = get_args(Overlap)
RTSTRUCT_OVERLAP: Overlap = "smaller"
SEG_OVERLAP: Overlap = "error"


@dataclass(frozen=True)
class Annotation:
    """An annotation file read onto the grid of its image series.

    ``labels``: a one-channel label map, or with ``per_structure`` one 0/1 channel per
    structure (channel ``c`` = label value ``sorted(names)[c + 1]``). ``names``: label value
    -> structure name (0 = background). ``sources``: label value -> the ROI or segment
    names it was made of. ``empty``: structures present in the file without any voxel (no
    contour, only point/line contours, or no frame). ``missing``: structures asked for but
    not in the file (absent from the label map). ``unmatched``: source names no
    structure took. ``skipped``: what was left out and why (point or line contours).
    """

    labels: Volume
    names: dict[int, str]
    sources: dict[int, tuple[str, ...]]
    reference_series: str
    empty: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    unmatched: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    per_structure: bool = False

    def sidecar(self) -> dict[str, Any]:
        """The JSON written next to a converted label map: value -> name and provenance."""
        return {
            "labels": {str(v): n for v, n in sorted(self.names.items())},
            "sources": {str(v): list(s) for v, s in sorted(self.sources.items())},
            "per_structure": self.per_structure,
            "annotation": self.labels.meta.get("source"),
            "format": self.labels.meta.get("format"),
            "reference_series": self.reference_series,
            "empty": list(self.empty),
            "missing": list(self.missing),
            "unmatched": list(self.unmatched),
            "skipped": list(self.skipped),
        }


def annotation_format(path: str | Path) -> str | None:
    """"rtstruct" or "dicom-seg" when ``path`` is such a file, else None."""
    path = Path(path)
    if not path.is_file():
        return None
    return dicom_series.annotation_format(dicom_series.read_header(path))


def read_annotation(
    path: str | Path,
    reference: Volume | str | Path | None = None,
    *,
    structures: StructuresLike | None = None,
    overlap: Overlap | None = None,
    per_structure: bool = False,
) -> Annotation:
    """Read an RTSTRUCT or DICOM-SEG file onto its image series' grid (see
    :func:`medseg.io.rtstruct.read_rtstruct`); ``overlap`` defaults to the format's policy."""
    fmt = annotation_format(path)
    if fmt == "rtstruct":
        from medseg.io.rtstruct import read_rtstruct

        return read_rtstruct(path, reference, structures=structures,
                             overlap=overlap or RTSTRUCT_OVERLAP, per_structure=per_structure)
    if fmt == "dicom-seg":
        from medseg.io.dicom_seg_read import read_dicom_seg

        return read_dicom_seg(path, reference, structures, overlap=overlap or SEG_OVERLAP,
                              per_structure=per_structure)
    raise ReadError("not an annotation file (expected an RTSTRUCT or a DICOM-SEG)", path)


def write_annotation(labels: Volume, path: str | Path, label_names: Mapping[int, str],
                     fmt: str) -> None:
    """Write a label map on its DICOM source grid as ``fmt`` ("rtstruct" or "dicom-seg")."""
    if fmt == "rtstruct":
        from medseg.io.rtstruct_write import write_rtstruct

        write_rtstruct(labels, path, label_names)
    elif fmt == "dicom-seg":
        from medseg.io.dicom_seg import write_dicom_seg

        write_dicom_seg(labels, path, label_names)
    else:
        raise InputError(f"unknown annotation format {fmt!r} ({', '.join(ANNOTATION_FORMATS)})")


def annotation_file_name(stem: str, fmt: str) -> str:
    """File name of a written annotation: ``<stem>.dcm`` (DICOM-SEG) or
    ``<stem>_rtstruct.dcm``, so both can sit in one folder."""
    return f"{stem}_rtstruct.dcm" if fmt == "rtstruct" else f"{stem}.dcm"


def sidecar_path(label_path: str | Path) -> Path:
    """``OUT.json`` next to a label map ``OUT.nii.gz`` (``.nii``, ``.nrrd``, ``.mha``...)."""
    path = Path(label_path)
    name = path.name
    for suffix in (".nii.gz", *SIDECAR_IMAGE_SUFFIXES):
        if name.lower().endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".json")
    return path.with_name(name + ".json")


def sidecar_names(label_path: str | Path) -> dict[int, str] | None:
    """Label value -> name from the JSON sidecar of a label map, None without one."""
    path = sidecar_path(label_path)
    if not path.is_file():
        return None
    try:
        labels = json.loads(path.read_text())["labels"]
        return {int(v): str(n) for v, n in labels.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ReadError(f"label names sidecar unreadable ({exc}); expected "
                        '{"labels": {"1": "name", ...}}', path) from exc


def select_sources(
    structures: StructuresLike | None, source_names: Sequence[str], where: str | Path
) -> tuple[dict[int, Structure], dict[int, tuple[str, ...]]]:
    """``(value -> Structure, value -> source names)`` for the names in a file.

    Without ``structures`` every distinct source name is a structure, values 1, 2, ... in
    file order. Structures found nowhere are missing from the second mapping.
    """
    if structures is None:
        distinct = list(dict.fromkeys(source_names))
        chosen = {v: Structure.exactly(n, [n]) for v, n in enumerate(distinct, start=1)}
    else:
        chosen = structures_by_value(structures)
    if not chosen:
        raise InputError("no structure to read (the file names none, or none was asked for)",
                         where)
    return chosen, match_structures(chosen, source_names)


def build_annotation(
    masks: Mapping[int, np.ndarray],
    chosen: Mapping[int, Structure],
    sources: Mapping[int, tuple[str, ...]],
    file_names: Sequence[str],
    grid: Volume,
    path: Path,
    *,
    fmt: str,
    overlap: Overlap,
    per_structure: bool,
    skipped: Sequence[str] = (),
) -> Annotation:
    """The :class:`Annotation` of boolean ``masks`` (label value -> (K, I, J) planes).

    ``chosen``/``sources``: from :func:`select_sources`; ``file_names``: every ROI or
    segment name of the file; ``grid``: the reference image volume.
    """
    names = {0: "background", **{v: s.name for v, s in chosen.items()}}
    stacked = (stack_masks(masks, sorted(masks)) if per_structure
               else compose(masks, names, overlap, path)[None])
    taken = {n for s in sources.values() for n in s}
    meta = {"source": str(path), "format": fmt, "case": grid.meta.get("case")}
    return Annotation(
        labels=Volume(stacked.transpose(0, 2, 3, 1), grid.affine.copy(), meta), names=names,
        sources=dict(sources), reference_series=str(grid.meta.get("series_uid", "")),
        empty=tuple(chosen[v].name for v in sources if not masks[v].any()),
        missing=tuple(chosen[v].name for v in chosen if v not in sources),
        unmatched=tuple(dict.fromkeys(n for n in file_names if n not in taken)),
        skipped=tuple(skipped), per_structure=per_structure,
    )


def union(planes: Sequence[np.ndarray], grid: Volume) -> np.ndarray:
    """Boolean (K, I, J) union of ``planes`` (all False when there are none)."""
    if planes:
        return np.logical_or.reduce(planes)
    i, j, k = grid.spatial_shape
    return np.zeros((k, i, j), bool)


def compose(
    masks: Mapping[int, np.ndarray], names: Mapping[int, str], overlap: Overlap,
    where: str | Path,
) -> np.ndarray:
    """One (I, J, K) label map from boolean masks per label value, by the ``overlap``
    policy (see the module docstring)."""
    if overlap not in OVERLAP_POLICIES:
        raise InputError(f"unknown overlap policy {overlap!r} (use {', '.join(OVERLAP_POLICIES)})")
    values = sorted(masks)
    shape = next(iter(masks.values())).shape
    dtype = np.uint8 if max(values, default=0) < 256 else np.uint16
    out = np.zeros(shape, dtype)
    if overlap == "error":
        _check_disjoint(masks, names, where)
    sizes = {v: int(np.count_nonzero(masks[v])) for v in values}
    order = sorted(values, key=lambda v: (-sizes[v], v)) if overlap == "smaller" else values
    for value in order:
        out[masks[value]] = value
    return out


def stack_masks(masks: Mapping[int, np.ndarray], values: Sequence[int]) -> np.ndarray:
    """(C, I, J, K) uint8 0/1 masks, channel c = label value ``values[c]``."""
    return np.stack([masks[v].astype(np.uint8) for v in values])


def _check_disjoint(masks: Mapping[int, np.ndarray], names: Mapping[int, str],
                    where: str | Path) -> None:
    values = sorted(masks)
    total = np.zeros(next(iter(masks.values())).shape, np.uint8)
    for v in values:
        total += masks[v].astype(np.uint8)
    if total.max(initial=0) <= 1:
        return
    pairs = [
        f"{names[a]!r} and {names[b]!r} ({int(np.count_nonzero(masks[a] & masks[b]))} voxels)"
        for i, a in enumerate(values) for b in values[i + 1:]
        if np.any(masks[a] & masks[b])
    ]
    raise ReadError(
        f"structures overlap: {'; '.join(pairs)}; read one mask per structure "
        "(per_structure / --per-structure) or choose an overlap policy "
        "(overlap / --overlap smaller|later)", where)

"""Pairing prediction and reference files by case name, whatever their format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medseg.core import sidecars
from medseg.core.errors import InputError

# Longest first, so "x.nii.gz" loses ".nii.gz" rather than ".gz".
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
NOT_VOLUMES = (".json", ".csv", ".txt", ".md", ".html", ".png", ".raw", ".zraw", ".pkl")


@dataclass(frozen=True)
class CasePairs:
    """Matched ``(case, prediction, reference)`` triples and the unmatched names."""

    pairs: tuple[tuple[str, Path, Path], ...]
    missing_predictions: tuple[str, ...]  # reference cases with no prediction
    unmatched_predictions: tuple[str, ...]  # predictions with no reference


def case_id(path: str | Path) -> str:
    """Case name of a volume path: the file name without its image suffix, or a folder name."""
    name = Path(path).name
    lower = name.lower()
    for suffix in VOLUME_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def list_volumes(folder: str | Path) -> dict[str, Path]:
    """Case name -> path of every volume file or DICOM folder directly inside ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("not a folder of label volumes", folder)
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.name.lower().endswith(NOT_VOLUMES):
            continue
        name = case_id(path)
        if name in found:
            raise InputError(
                f"two volumes for case {name!r}: {found[name].name}, {path.name}", folder
            )
        found[name] = path
    return found


def match_cases(pred_dir: str | Path, ref_dir: str | Path) -> CasePairs:
    """Pair predictions with references of the same case name; raise if none pair up.

    A prediction's sidecar volumes (``<case>_uncertainty``, ``<case>_disagreement``) are
    not cases of their own."""
    preds, refs = list_volumes(pred_dir), list_volumes(ref_dir)
    preds = {n: p for n, p in preds.items()
             if n in refs or sidecars.sidecar_owner(n, preds) is None}
    common = sorted(preds.keys() & refs.keys())
    if not common:
        raise InputError(
            f"no prediction in {pred_dir} has the case name of a reference in {ref_dir} "
            f"({len(preds)} predictions, {len(refs)} references)"
        )
    return CasePairs(
        pairs=tuple((c, preds[c], refs[c]) for c in common),
        missing_predictions=tuple(sorted(refs.keys() - preds.keys())),
        unmatched_predictions=tuple(sorted(preds.keys() - refs.keys())),
    )

"""Names of the files prediction writes next to a case's label map.

One source of truth for the writers (``medseg.inference``) and the readers
(``medseg.metrics``: evaluation pairs predictions by case name and must not take these for
cases of their own, and shows their content)::

    OUT/<case>.nii.gz                  label map
    OUT/<case>_uncertainty.nii.gz      per-voxel uncertainty (normalized entropy, 0..1)
    OUT/<case>_disagreement.nii.gz     between-member disagreement (ensembles only)
    OUT/<case>_uncertainty.json        per-case uncertainty score and its parts
    OUT/<case>_probabilities.npz       class probabilities (--save-probabilities)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

UNCERTAINTY = "_uncertainty"
DISAGREEMENT = "_disagreement"
PROBABILITIES = "_probabilities"
#: Name endings of sidecar volumes (a case ``x`` owns ``x_uncertainty`` and ``x_disagreement``).
VOLUME_SIDECARS = (UNCERTAINTY, DISAGREEMENT)
SCORE_FORMAT = "medseg-uncertainty-v1"


def uncertainty_map_path(folder: str | Path, case: str) -> Path:
    return Path(folder) / f"{case}{UNCERTAINTY}.nii.gz"


def disagreement_map_path(folder: str | Path, case: str) -> Path:
    return Path(folder) / f"{case}{DISAGREEMENT}.nii.gz"


def uncertainty_score_path(folder: str | Path, case: str) -> Path:
    return Path(folder) / f"{case}{UNCERTAINTY}.json"


def sidecar_owner(name: str, cases: Mapping[str, Any]) -> str | None:
    """The case in ``cases`` whose sidecar volume is called ``name``, or None."""
    for suffix in VOLUME_SIDECARS:
        if name.endswith(suffix) and name[: -len(suffix)] in cases:
            return name[: -len(suffix)]
    return None


def read_uncertainty_score(folder: str | Path, case: str) -> dict[str, Any] | None:
    """The case's uncertainty score file as a dict, or None when there is none (or it is
    not one: a malformed file is ignored rather than breaking a report)."""
    path = uncertainty_score_path(folder, case)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != SCORE_FORMAT:
        return None
    return data

"""Which label values to evaluate and what to call them.

Names come from ``--labels 1:Anterior,2:Posterior``, else from a ``dataset.json`` in or
next to the reference folder (Decathlon ``{"1": "Anterior"}`` or nnU-Net v2
``{"Anterior": 1}`` style), else from the values found (``label_3``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from medseg.core.errors import ConfigError, DatasetError

DATASET_JSON = "dataset.json"


def default_name(value: int) -> str:
    """Name of a label value that no dataset description names."""
    return f"label_{value}"


def parse_labels(spec: str) -> dict[int, str]:
    """Parse ``"1:Anterior,2:Posterior"`` (or ``"1,2"``) into a value -> name dict."""
    labels: dict[int, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        value_text, _, name = item.partition(":")
        try:
            value = int(value_text)
        except ValueError:
            raise ConfigError(
                f"--labels item {item!r} must look like VALUE:NAME, e.g. 1:Anterior"
            ) from None
        if value in labels:
            raise ConfigError(f"--labels gives label value {value} twice")
        labels[value] = name.strip() or default_name(value)
    if not labels:
        raise ConfigError("--labels is empty; give e.g. 1:Anterior,2:Posterior")
    return labels


def parse_regions(spec: str) -> dict[str, tuple[int, ...]]:
    """Parse ``"whole_tumour=1,2,3,4;core=1,3,4"`` into region name -> label values."""
    regions: dict[str, tuple[int, ...]] = {}
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        name, sep, values = item.partition("=")
        try:
            members = tuple(sorted({int(v) for v in values.split(",") if v.strip()}))
        except ValueError:
            members = ()
        if not sep or not name.strip() or not members or min(members) <= 0:
            raise ConfigError(f"region {item!r} must look like NAME=1,2,3 (positive label "
                              "values)")
        if name.strip() in regions:
            raise ConfigError(f"region {name.strip()!r} is given twice")
        regions[name.strip()] = members
    if not regions:
        raise ConfigError("--regions is empty; give e.g. whole_tumour=1,2,3,4")
    return regions


def find_dataset_json(reference_dir: str | Path) -> Path | None:
    """``dataset.json`` in the reference folder or its parent (Decathlon ``labelsTr/..``)."""
    folder = Path(reference_dir)
    for candidate in (folder / DATASET_JSON, folder.parent / DATASET_JSON):
        if candidate.is_file():
            return candidate
    return None


def labels_from_dataset_json(path: str | Path) -> dict[int, str]:
    """Foreground labels (value -> name) of a Decathlon or nnU-Net v2 ``dataset.json``."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))["labels"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"cannot read the 'labels' of this dataset.json ({exc})", path) from None
    if not isinstance(raw, Mapping):
        raise DatasetError("'labels' must be an object", path)
    labels: dict[int, str] = {}
    for key, val in raw.items():
        pair = _label_pair(str(key), val)
        if pair is None:
            raise DatasetError(
                f"cannot understand label entry {key!r}: {val!r} (region labels are not "
                "supported; pass --labels VALUE:NAME,...)",
                path,
            )
        if pair[0] != 0:
            labels[pair[0]] = pair[1]
    return dict(sorted(labels.items()))


def _label_pair(key: str, val: object) -> tuple[int, str] | None:
    if key.lstrip("-").isdigit() and isinstance(val, str):
        return int(key), val  # Decathlon: "1": "Anterior"
    if isinstance(val, int) and not isinstance(val, bool):
        return val, key  # nnU-Net v2: "Anterior": 1
    return None


def name_labels(values: Iterable[int], known: Mapping[int, str] | None = None) -> dict[int, str]:
    """``values`` (sorted) mapped to their names from ``known``, else :func:`default_name`."""
    known = known or {}
    return {v: known.get(v, default_name(v)) for v in sorted(set(values))}

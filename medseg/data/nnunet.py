"""nnU-Net v2 raw datasets: ``dataset.json`` with ``channel_names``, ``labels`` (name -> value,
or name -> list of values for region-based training with ``regions_class_order``) and
``file_ending``; cases are found in ``imagesTr/`` (``<case>_<cccc><file_ending>``) and
``labelsTr/`` (``<case><file_ending>``), test cases in ``imagesTs/``, unless the optional
``dataset`` key lists every case's files.

Region labels: the label files hold integer values; region ``i`` (in ``labels`` order) is
painted with ``regions_class_order[i]``, so medseg's label values are those numbers and
the regions are kept in :attr:`Dataset.regions`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.core.errors import DatasetError, InputError
from medseg.data.dataset import Case, Dataset

DEFAULT_FILE_ENDING = ".nii.gz"


@dataclass(frozen=True)
class NnunetLabels:
    """The ``labels`` entry of an nnU-Net v2 dataset.json, in medseg's terms."""

    values: dict[int, str]  # label value -> name (0 = background)
    regions: dict[str, tuple[int, ...]]  # region name -> label values (region-based only)
    regions_class_order: tuple[int, ...] = ()
    ignore_label: int | None = None

    @property
    def has_regions(self) -> bool:
        return bool(self.regions)


def is_nnunet_raw(root: Path) -> bool:
    """True for a folder with an nnU-Net v2 ``dataset.json`` (it has ``channel_names``)."""
    meta = root / "dataset.json"
    if not meta.is_file():
        return False
    try:
        data = json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and "channel_names" in data


def read_dataset_json(path: Path) -> dict[str, Any]:
    """A dataset.json as a dict (DatasetError naming the file when unreadable)."""
    return read_json_object(path, "dataset description", DatasetError)


def read_json_object(path: Path, what: str,
                     error: type[InputError] = DatasetError) -> dict[str, Any]:
    """A JSON file holding an object; ``error`` names the file and says what is wrong."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"cannot read {what}: {exc}", path) from exc
    if not isinstance(data, dict):
        raise error(f"{what} must be a JSON object", path)
    return data


def parse_channels(meta: Mapping[str, Any], where: Path) -> dict[int, str]:
    """``channel_names`` (v2) or ``modality`` (v1/MSD) as ``{index: name}``."""
    value = meta.get("channel_names", meta.get("modality"))
    if not isinstance(value, Mapping) or not value:
        raise DatasetError("dataset.json needs a non-empty 'channel_names' object", where)
    try:
        channels = {int(k): str(v) for k, v in value.items()}
    except ValueError as exc:
        raise DatasetError(f"'channel_names' keys must be integers: {exc}", where) from exc
    if sorted(channels) != list(range(len(channels))):
        raise DatasetError(f"channel indices must be 0..{len(channels) - 1}, got "
                           f"{sorted(channels)}", where)
    return channels


def parse_labels(meta: Mapping[str, Any], where: Path) -> NnunetLabels:
    """``labels`` as name -> value, or name -> [values] with ``regions_class_order``; the
    Decathlon's value -> name (``{"0": "background", "1": "liver"}``), which many v2-style
    files keep next to ``channel_names``, is read too."""
    raw = meta.get("labels")
    if not isinstance(raw, Mapping) or not raw:
        raise DatasetError("dataset.json needs a non-empty 'labels' object", where)
    if any(isinstance(v, (list, tuple)) for v in raw.values()):
        return _region_labels(raw, meta.get("regions_class_order"), where)
    try:
        if all(_integral(k) for k in raw) and not all(_integral(v) for v in raw.values()):
            values = {int(k): str(v) for k, v in raw.items()}  # value -> name
        else:
            values = {int(v): str(k) for k, v in raw.items()}
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"'labels' values must be integers: {exc}", where) from exc
    if len(values) != len(raw):
        raise DatasetError("two labels share a value", where)
    if 0 not in values:
        raise DatasetError("'labels' must declare background = 0", where)
    ignore = values.get(max(values)) == "ignore"
    return NnunetLabels(values, {}, (), max(values) if ignore else None)


def _integral(value: Any) -> bool:
    return isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())


def _region_labels(raw: Mapping[str, Any], order: Any, where: Path) -> NnunetLabels:
    regions = {str(k): tuple(int(x) for x in (v if isinstance(v, (list, tuple)) else [v]))
               for k, v in raw.items()}
    foreground = {k: v for k, v in regions.items() if v != (0,)}
    if len(foreground) == len(regions):
        raise DatasetError("region labels must declare background = 0", where)
    if not isinstance(order, Sequence) or len(order) != len(foreground):
        raise DatasetError(f"region labels need 'regions_class_order' with one value per "
                           f"region ({len(foreground)})", where)
    order = tuple(int(v) for v in order)
    names = dict(zip(order, foreground, strict=True))
    used = sorted({v for vs in foreground.values() for v in vs} | set(order))
    values = {0: "background", **{v: names.get(v, f"label_{v}") for v in used if v}}
    return NnunetLabels(values, foreground, order)


def load_nnunet_raw(root: str | Path) -> Dataset:
    """Load an nnU-Net v2 raw dataset folder (``DatasetXXX_Name/``)."""
    root = Path(root).absolute()
    where = root / "dataset.json"
    meta = read_dataset_json(where)
    channels = parse_channels(meta, where)
    labels = parse_labels(meta, where)
    ending = str(meta.get("file_ending", DEFAULT_FILE_ENDING))
    if "dataset" in meta:
        cases = _listed_cases(root, meta["dataset"], len(channels), where)
    else:
        cases = _scanned_cases(root / "imagesTr", root / "labelsTr", ending, len(channels))
    if not cases:
        raise DatasetError(f"no training cases (*_0000{ending}) in imagesTr", root)
    tests = _scanned_cases(root / "imagesTs", None, ending, len(channels))
    return Dataset(name=str(meta.get("name", root.name)), root=root, labels=labels.values,
                   channels=channels, cases=tuple(cases), test_cases=tuple(tests),
                   regions=labels.regions)


def nnunet_case_ids(folder: Path, ending: str) -> list[str]:
    """Case ids of the ``<case>_0000<ending>`` files in ``folder`` (sorted)."""
    if not folder.is_dir():
        return []
    suffix = "_0000" + ending
    return sorted(p.name[: -len(suffix)] for p in folder.iterdir() if p.name.endswith(suffix))


def _scanned_cases(images: Path, labels: Path | None, ending: str, n_channels: int) -> list[Case]:
    cases = []
    for case_id in nnunet_case_ids(images, ending):
        files = tuple(images / f"{case_id}_{c:04d}{ending}" for c in range(n_channels))
        label = None if labels is None else labels / f"{case_id}{ending}"
        cases.append(Case(case_id, files, label))
    return cases


def _listed_cases(root: Path, listing: Any, n_channels: int, where: Path) -> list[Case]:
    if not isinstance(listing, Mapping):
        raise DatasetError("'dataset' must map case ids to {images, label}", where)
    cases = []
    for case_id, entry in sorted(listing.items()):
        images = entry.get("images") if isinstance(entry, Mapping) else None
        if not isinstance(images, list) or len(images) != n_channels:
            raise DatasetError(f"case {case_id}: 'images' must list {n_channels} file(s)", where)
        label = entry.get("label")
        cases.append(Case(str(case_id), tuple(_resolve(root, p) for p in images),
                          None if label is None else _resolve(root, label)))
    return cases


def _resolve(root: Path, rel: str) -> Path:
    return Path(os.path.normpath(root / rel))

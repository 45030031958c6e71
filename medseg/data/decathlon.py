"""Medical Segmentation Decathlon layout: ``dataset.json``, ``imagesTr/``, ``labelsTr/``,
optional ``imagesTs/``; multi-channel cases store channel ``c`` as ``<case>_<cccc>.nii.gz``."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medseg.core.errors import DatasetError
from medseg.data.dataset import Case, Dataset
from medseg.data.nnunet import read_dataset_json

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def is_decathlon(root: Path) -> bool:
    """True when ``root`` holds a ``dataset.json`` next to an ``imagesTr`` folder."""
    return (root / "dataset.json").is_file() and (root / "imagesTr").is_dir()


def load_decathlon(root: str | Path) -> Dataset:
    """Load a Decathlon-style dataset; paths in ``dataset.json`` are resolved against ``root``."""
    root = Path(root).absolute()
    meta = read_dataset_json(root / "dataset.json")
    channels = _int_keyed(meta, "modality", root)
    labels = _int_keyed(meta, "labels", root)
    training = meta.get("training")
    if not isinstance(training, list) or not training:
        raise DatasetError("dataset.json has no 'training' list", root / "dataset.json")
    cases = tuple(_training_case(root, entry, len(channels)) for entry in training)
    tests = meta.get("test") or _scan_images_ts(root / "imagesTs")
    test_cases = tuple(_test_case(root, entry, len(channels)) for entry in tests)
    return Dataset(
        name=str(meta.get("name", root.name)), root=root, labels=labels, channels=channels,
        cases=cases, test_cases=test_cases,
    )


def case_id_of(path: Path) -> str:
    """The case id of an image file name (without extension or ``_0000`` channel suffix)."""
    stem = strip_nifti_suffix(path.name)
    m = _CHANNEL_SUFFIX.match(stem)
    return m["case"] if m else stem


def strip_nifti_suffix(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def channel_files(folder: Path, case_id: str, n_channels: int) -> tuple[Path, ...]:
    """Channel files of a case: ``<case>_0000.nii.gz``..., or ``<case>.nii.gz`` if mono-modal."""
    for ext in NIFTI_SUFFIXES:
        suffixed = tuple(folder / f"{case_id}_{c:04d}{ext}" for c in range(n_channels))
        if all(p.exists() for p in suffixed):
            return suffixed
        plain = folder / f"{case_id}{ext}"
        if n_channels == 1 and plain.exists():
            return (plain,)
    # Missing files are kept as paths so that validation reports them by name.
    if n_channels == 1:
        return (folder / f"{case_id}.nii.gz",)
    return tuple(folder / f"{case_id}_{c:04d}.nii.gz" for c in range(n_channels))


def _training_case(root: Path, entry: Any, n_channels: int) -> Case:
    if not isinstance(entry, Mapping) or "image" not in entry:
        raise DatasetError(f"bad training entry {entry!r}", root / "dataset.json")
    image = _resolve(root, entry["image"])
    case_id = case_id_of(image)
    label = _resolve(root, entry["label"]) if entry.get("label") else None
    return Case(case_id, channel_files(image.parent, case_id, n_channels), label)


def _test_case(root: Path, entry: Any, n_channels: int) -> Case:
    rel = entry["image"] if isinstance(entry, Mapping) else entry
    image = _resolve(root, rel)
    case_id = case_id_of(image)
    return Case(case_id, channel_files(image.parent, case_id, n_channels), None)


def _scan_images_ts(folder: Path) -> list[str]:
    """One image path per test case found in ``imagesTs`` (when dataset.json lists none)."""
    if not folder.is_dir():
        return []
    first_file = {}
    for p in sorted(folder.iterdir()):
        if p.name.endswith(NIFTI_SUFFIXES):
            first_file.setdefault(case_id_of(p), str(p))
    return list(first_file.values())


def _resolve(root: Path, rel: str) -> Path:
    return Path(os.path.normpath(root / rel))


def _int_keyed(meta: Mapping[str, Any], key: str, root: Path) -> dict[int, str]:
    value = meta.get(key)
    if not isinstance(value, Mapping) or not value:
        raise DatasetError(f"dataset.json needs a non-empty '{key}' object", root / "dataset.json")
    try:
        return {int(k): str(v) for k, v in value.items()}
    except ValueError as exc:
        raise DatasetError(f"'{key}' keys must be integers: {exc}", root / "dataset.json") from exc

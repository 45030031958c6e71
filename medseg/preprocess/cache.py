"""On-disk cache of preprocessed cases, readable patch-wise through memory maps.

``RUN/preprocessed/<key>/`` where ``key`` hashes the plan's preprocessing fields and the
identity (path, size, mtime) of every input file. Per case: ``<case>.npy`` (float32 image),
``<case>_seg.npy`` (uint8 class indices), ``<case>_fg.npz`` (voxel coordinates per
foreground class) and ``<case>.json`` (the record, written last). ``index.json`` is written
last of all, once every case is done.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.atomic import atomic_path, write_json
from medseg.core.errors import DatasetError
from medseg.data import Case
from medseg.preprocess.case import PreprocessedCase
from medseg.preprocess.plan import Plan

CACHE_FORMAT = "medseg-cache-v1"
INDEX = "index.json"
FOREGROUND_SAMPLES = 10_000  # voxel coordinates kept per class and case


def input_identity(case: Case) -> list[list[Any]]:
    """``[path, size, mtime_ns]`` of every input file (every file of a DICOM series folder),
    and ``["regularize", true]`` when the case is read with slice regularisation."""
    files: list[Path] = []
    for path in case.files():
        files.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    out = []
    for f in files:
        try:
            st = f.stat()
            out.append([str(f), st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([str(f), None, None])
    return out + ([["regularize", True]] if case.regularize else [])


def cache_key(plan: Plan, identities: Sequence[tuple[str, list[list[Any]]]]) -> str:
    """Hash of the plan's preprocessing fields and every case's input identity."""
    blob = json.dumps([plan.preprocessing_hash(), sorted(identities)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def is_cached(folder: Path, case_id: str, identity: list[list[Any]], plan_hash: str) -> bool:
    """True when ``case_id`` was fully written to ``folder`` from these inputs and plan."""
    record_path = folder / f"{case_id}.json"
    if not record_path.is_file() or not (folder / f"{case_id}.npy").is_file():
        return False
    try:
        record = json.loads(record_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return record.get("inputs") == identity and record.get("plan_hash") == plan_hash


def case_files(folder: Path, case_id: str) -> list[Path]:
    """The existing files of a case, its record last."""
    names = (f"{case_id}.npy", f"{case_id}_seg.npy", f"{case_id}_fg.npz", f"{case_id}.json")
    return [folder / n for n in names if (folder / n).is_file()]


def adopt_case(folder: Path, donors: Sequence[Path], case_id: str,
               identity: list[list[Any]], plan_hash: str) -> bool:
    """Hard-link (or copy) a case from another cache folder made with the same inputs and
    plan; True if one was found. The record is linked last, so a crash leaves no record."""
    for donor in donors:
        if donor != folder and is_cached(donor, case_id, identity, plan_hash):
            for src in case_files(donor, case_id):
                _link_or_copy(src, folder / src.name)
            return True
    return False


def write_case(folder: Path, case_id: str, pre: PreprocessedCase,
               identity: list[list[Any]], plan_hash: str) -> int:
    """Write one case (record last); returns the bytes written."""
    written = [folder / f"{case_id}.npy"]
    _save_npy(written[0], pre.image)
    if pre.label is not None:
        written += [folder / f"{case_id}_seg.npy", folder / f"{case_id}_fg.npz"]
        _save_npy(written[1], pre.label)
        n_classes = len(pre.record["label_values"])
        locations = foreground_locations(pre.label, n_classes, seed=_seed(case_id))
        with _fast_path(written[2]) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **{f"class_{k}": v for k, v in locations.items()})
    written.append(folder / f"{case_id}.json")
    record = {**pre.record, "inputs": identity, "plan_hash": plan_hash}
    with _fast_path(written[-1]) as tmp:
        tmp.write_text(json.dumps(record))
    return sum(p.stat().st_size for p in written)


def foreground_locations(label: np.ndarray, n_classes: int, seed: int = 0,
                         max_per_class: int = FOREGROUND_SAMPLES) -> dict[int, np.ndarray]:
    """int32 ``(N, 3)`` voxel coordinates of each foreground class ``1..n_classes-1`` (at
    most ``max_per_class``, a seeded random subset; empty for an absent class)."""
    rng = np.random.default_rng(seed)
    flat = np.flatnonzero(label[0])
    values = label[0].ravel()[flat]
    coords = np.stack(np.unravel_index(flat, label.shape[1:]), axis=1).astype(np.int32)
    out = {}
    for k in range(1, n_classes):
        mine = coords[values == k]
        if len(mine) > max_per_class:
            mine = mine[np.sort(rng.choice(len(mine), max_per_class, replace=False))]
        out[k] = mine
    return out


def write_index(folder: Path, plan: Plan, key: str, entries: dict[str, dict[str, Any]]) -> None:
    """Mark the cache complete: plan hash, and per case its shape and whether it has a label.

    Case files are written atomically but without a per-file fsync (4 files per case made
    that the main cost); one ``os.sync()`` here makes them durable before the marker.
    """
    os.sync()
    write_json(folder / INDEX, {
        "format": CACHE_FORMAT, "key": key, "plan_hash": plan.preprocessing_hash(),
        "plan": plan.to_dict(), "cases": dict(sorted(entries.items())),
    })


@dataclass(frozen=True)
class Cache:
    """Read access to a complete cache folder."""

    folder: Path
    index: dict[str, Any]

    @property
    def case_ids(self) -> tuple[str, ...]:
        return tuple(self.index["cases"])

    @property
    def plan(self) -> Plan:
        return Plan.from_dict(self.index["plan"])

    def shape(self, case_id: str) -> tuple[int, ...]:
        return tuple(self._entry(case_id)["shape"])

    def image(self, case_id: str, mmap: bool = True) -> np.ndarray:
        """float32 ``(C, X, Y, Z)``; memory-mapped read-only unless ``mmap`` is False."""
        self._entry(case_id)
        return np.load(self.folder / f"{case_id}.npy", mmap_mode="r" if mmap else None)

    def label(self, case_id: str, mmap: bool = True) -> np.ndarray | None:
        """uint8 class indices ``(1, X, Y, Z)``, or None for an unlabelled case."""
        if not self._entry(case_id)["labelled"]:
            return None
        return np.load(self.folder / f"{case_id}_seg.npy", mmap_mode="r" if mmap else None)

    def foreground(self, case_id: str) -> dict[int, np.ndarray]:
        """Class index -> int32 ``(N, 3)`` voxel coordinates (empty dict if unlabelled)."""
        if not self._entry(case_id)["labelled"]:
            return {}
        with np.load(self.folder / f"{case_id}_fg.npz") as data:
            return {int(name.split("_")[1]): data[name] for name in data.files}

    def record(self, case_id: str) -> dict[str, Any]:
        self._entry(case_id)
        return json.loads((self.folder / f"{case_id}.json").read_text())

    def _entry(self, case_id: str) -> dict[str, Any]:
        try:
            return self.index["cases"][case_id]
        except KeyError:
            raise DatasetError(f"case {case_id!r} is not in the cache", self.folder) from None


def open_cache(path: str | Path) -> Cache:
    """Open a cache folder, or the newest complete cache of a run folder whose plan hash
    matches the run's ``plan.json``."""
    path = Path(path)
    folder = path if (path / INDEX).is_file() else _run_cache(path)
    try:
        index = json.loads((folder / INDEX).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read cache index: {exc}", folder) from exc
    if index.get("format") != CACHE_FORMAT:
        raise DatasetError(f"not a {CACHE_FORMAT} cache", folder)
    return Cache(folder, index)


def _run_cache(run_dir: Path) -> Path:
    root = run_dir / "preprocessed"
    if not (run_dir / "plan.json").is_file() or not root.is_dir():
        raise DatasetError("no complete preprocessed cache (run `medseg preprocess` first)",
                           run_dir)
    wanted = Plan.load(run_dir / "plan.json").preprocessing_hash()
    matches = []
    for index_path in root.glob(f"*/{INDEX}"):
        try:
            if json.loads(index_path.read_text()).get("plan_hash") == wanted:
                matches.append(index_path)
        except (OSError, json.JSONDecodeError):
            continue
    if not matches:
        raise DatasetError("no complete cache for the current plan.json (run `medseg "
                           "preprocess` first)", run_dir)
    return max(matches, key=lambda p: p.stat().st_mtime_ns).parent


def _fast_path(path: Path) -> contextlib.AbstractContextManager[Path]:
    """Atomic (rename) but not yet durable: see :func:`write_index`."""
    return atomic_path(path, durable=False)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with _fast_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array))


def _link_or_copy(src: Path, dst: Path) -> None:
    with _fast_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def _seed(case_id: str) -> int:
    return int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:4], "little")


"""Run-folder state: ``stages.json`` records, stage keys and digests of files.

A stage's *key* hashes everything its result depends on: its config section, the
digests of the outputs of the stages it reads, and the external inputs it reads. A stage
whose recorded key equals the current key, with status ``done`` and its outputs present,
is up to date.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from medseg.core.atomic import write_json
from medseg.core.errors import ConfigError

STAGES_FILE = "stages.json"
FORMAT = "medseg-stages-v1"
Status = Literal["running", "failed", "done"]


@dataclass(frozen=True)
class KeyParts:
    """What a stage key is made of (kept in stages.json to explain re-runs)."""

    config: str
    upstream: dict[str, str] = field(default_factory=dict)
    inputs: str = ""

    @property
    def key(self) -> str:
        return hash_json(asdict(self))


@dataclass(frozen=True)
class StageRecord:
    """One stage's entry in stages.json."""

    status: Status
    parts: KeyParts
    outputs: tuple[str, ...] = ()
    digest: str = ""
    started: str = ""
    seconds: float = 0.0
    summary: str = ""
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.parts.key, "outputs": list(self.outputs)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> StageRecord:
        parts = KeyParts(**raw["parts"])
        return cls(
            status=raw["status"], parts=parts, outputs=tuple(raw.get("outputs", ())),
            digest=raw.get("digest", ""), started=raw.get("started", ""),
            seconds=float(raw.get("seconds", 0.0)), summary=raw.get("summary", ""),
            error=raw.get("error", ""),
        )


def hash_json(obj: Any) -> str:
    """Short sha256 of a JSON-serialisable object (keys sorted)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _files_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


def content_digest(paths: Iterable[Path], root: Path) -> str:
    """sha256 over the names (relative to ``root``) and bytes of files/folders.

    Missing paths raise FileNotFoundError: callers treat them as "stage must re-run".
    """
    h = hashlib.sha256()
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(path)
        for f in _files_under(path):
            h.update(str(f.relative_to(root) if f.is_relative_to(root) else f).encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def stat_digest(paths: Iterable[Path]) -> str:
    """Cheap digest of external inputs: every file's path, size and modification time."""
    entries = []
    for path in paths:
        if not path.exists():
            entries.append((str(path), "missing"))
            continue
        for f in _files_under(path):
            st = os.stat(f)
            entries.append((str(f), st.st_size, st.st_mtime_ns))
    return hash_json(entries)


def load_records(run_dir: Path) -> dict[str, StageRecord]:
    """The stage records of a run folder ({} for a new one)."""
    path = run_dir / STAGES_FILE
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT:
            raise ValueError(f"format is {raw.get('format')!r}, expected {FORMAT!r}")
        return {name: StageRecord.from_dict(rec) for name, rec in raw["stages"].items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"unreadable stage state ({exc}); delete it to start over",
                          path) from exc


def save_records(run_dir: Path, records: Mapping[str, StageRecord]) -> None:
    """Write stages.json atomically."""
    write_json(run_dir / STAGES_FILE, {
        "format": FORMAT,
        "stages": {name: rec.to_dict() for name, rec in records.items()},
    })


def rerun_reason(old: StageRecord | None, parts: KeyParts) -> str:
    """Why a stage must run, in words."""
    if old is None:
        return "not run before"
    changed = [n for n in parts.upstream if old.parts.upstream.get(n) != parts.upstream[n]]
    if changed:
        return f"upstream changed: {', '.join(changed)}"
    if old.parts.config != parts.config:
        return "configuration changed"
    if old.parts.inputs != parts.inputs:
        return "inputs changed"
    return f"previous status: {old.status}"

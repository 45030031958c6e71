"""Atomic file writes: write to a temporary sibling, fsync, then rename over the target.

A crash at any moment leaves either the old file, or no file, never a half-written one
under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medseg.core.errors import OutputError


def _file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 minus the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_path(target: str | Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; it is renamed to ``target`` only on success.

    The temporary name keeps the target's suffixes (``.nii.gz``), so format detection by
    extension keeps working for writers that look at the file name. ``durable=False``
    skips the fsync (still atomic if the process dies; the caller must make the data
    durable itself, e.g. one ``os.sync()`` before a completion marker, as the cache does).
    """
    target = Path(target)
    parent = target.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError("output folder is a file", parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a file where an ancestor folder should be
        raise OutputError(f"cannot create output folder ({exc.strerror})", parent) from exc
    suffix = "".join(target.suffixes)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=parent)
    os.close(fd)
    tmp = Path(name)
    tmp.chmod(_FILE_MODE)  # mkstemp makes 0600 files; outputs get the usual umask mode
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(target: str | Path, data: bytes) -> None:
    """Atomically write ``data`` to ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | Path, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``target``."""
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")

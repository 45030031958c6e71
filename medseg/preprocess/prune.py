"""Removing preprocessed caches a run folder no longer uses.

Every change of the plan's preprocessing fields or of an input file makes a new
``RUN/preprocessed/<key>/`` folder; unchanged cases are hard-linked from the older folders,
so these cost only what differs, but they are never removed automatically (switching back
to an earlier plan reuses them). :func:`prune_caches` removes every cache folder except the
one :func:`~medseg.preprocess.cache.open_cache` picks for the run's current ``plan.json``,
and counts the bytes actually freed (files still linked from the kept cache free nothing).
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from medseg.preprocess.cache import open_cache


@dataclass(frozen=True)
class PruneSummary:
    """What :func:`prune_caches` kept, removed (or would remove) and freed."""

    kept: Path
    removed: tuple[Path, ...]
    freed_bytes: int
    dry_run: bool

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return (f"kept {self.kept.name}; {verb} {len(self.removed)} stale cache folder(s), "
                f"{self.freed_bytes / 2**20:.1f} MiB freed{' (dry run)' if self.dry_run else ''}")


def stale_caches(run_dir: str | Path) -> tuple[Path, list[Path]]:
    """(the current cache folder, the other folders under ``run_dir/preprocessed``),
    including incomplete ones left by an interrupted preprocessing. Raises
    :class:`~medseg.core.errors.DatasetError` when there is no current cache to keep."""
    current = open_cache(run_dir).folder.resolve()
    root = Path(run_dir) / "preprocessed"
    others = sorted(p for p in root.iterdir() if p.is_dir() and p.resolve() != current)
    return current, others


def freed_bytes(folders: Iterable[Path]) -> int:
    """Bytes freed by deleting ``folders``: files whose every hard link is inside them."""
    links: Counter[tuple[int, int]] = Counter()
    sizes: dict[tuple[int, int], tuple[int, int]] = {}
    for folder in folders:
        for path in folder.rglob("*"):
            stat = path.lstat()
            if path.is_file() and not path.is_symlink():
                inode = (stat.st_dev, stat.st_ino)
                links[inode] += 1
                sizes[inode] = (stat.st_size, stat.st_nlink)
    return sum(size for inode, (size, nlink) in sizes.items() if links[inode] >= nlink)


def prune_caches(run_dir: str | Path, dry_run: bool = False) -> PruneSummary:
    """Delete the cache folders of ``run_dir`` other than the current one."""
    current, stale = stale_caches(run_dir)
    freed = freed_bytes(stale)
    if not dry_run:
        for folder in stale:
            shutil.rmtree(folder)
    return PruneSummary(current, tuple(stale), freed, dry_run)

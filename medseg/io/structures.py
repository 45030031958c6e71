"""Which structures of an annotation file become which label values.

Centres spell ROI and segment names differently ("Lung_L", "LUNG LEFT", "Lung-Left"), so a
:class:`Structure` has a canonical name (the label name) and patterns. A pattern is

- ``/regex/``: a case-insensitive regular expression searched in the source name;
- ``=Name``: that exact source name (used for names resolved once already); a structure
  with such patterns matches those names only, not its own name;
- anything else: the same name once case, spaces, ``_`` and ``-`` are ignored.

The canonical name is itself a pattern of the last kind. Matching is explicit and ordered:
every source name goes to the *first* structure that matches it, and a structure takes the
union of every source name that matched (two ROIs "GTV-1" and "GTV-2" both matching
``/^gtv/`` become one structure). Label values follow the order of the structures
(1, 2, ...) unless a mapping gives them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from medseg.core.errors import InputError


@dataclass(frozen=True)
class Structure:
    """A label's canonical ``name`` and the ``patterns`` that find it in annotation files."""

    name: str
    patterns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise InputError("a structure needs a non-empty name")
        for pattern in self.patterns:
            if _is_regex(pattern):
                try:
                    re.compile(pattern[1:-1])
                except re.error as exc:
                    raise InputError(f"structure {self.name!r}: bad regular expression "
                                     f"{pattern!r} ({exc})") from exc

    @classmethod
    def exactly(cls, name: str, sources: Iterable[str]) -> Structure:
        """A structure matching only the source names ``sources``, verbatim."""
        return cls(name, tuple(f"={s}" for s in sources))

    def matches(self, source_name: str) -> bool:
        """True when ``source_name`` (an ROI name or segment label) is this structure."""
        if any(p.startswith("=") for p in self.patterns):
            return source_name in {p[1:] for p in self.patterns if p.startswith("=")}
        for pattern in (self.name, *self.patterns):
            if _is_regex(pattern):
                if re.search(pattern[1:-1], source_name, re.IGNORECASE):
                    return True
            elif squash(pattern) == squash(source_name):
                return True
        return False


StructuresLike = Sequence["str | Structure"] | Mapping[int, "str | Structure"]


def structures_by_value(structures: StructuresLike) -> dict[int, Structure]:
    """Label value -> Structure: a sequence gives values 1, 2, ... in order; a mapping keeps
    its values (value 0, the background, is ignored)."""
    items = (structures.items() if isinstance(structures, Mapping)
             else enumerate(structures, start=1))
    out = {}
    for value, item in items:
        if int(value) == 0:
            continue
        out[int(value)] = item if isinstance(item, Structure) else Structure(str(item))
    names = [s.name for s in out.values()]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"structure names given more than once: {', '.join(repeated)}")
    return out


def parse_structure_args(items: Sequence[str]) -> list[Structure]:
    """Structures from command-line words ``NAME`` or ``NAME=PATTERN``; repeating a NAME adds
    patterns to it. Label values follow the order in which names first appear."""
    patterns: dict[str, list[str]] = {}
    for item in items:
        name, sep, pattern = item.partition("=")
        name = name.strip()
        if not name:
            raise InputError(f"bad structure {item!r}: expected NAME or NAME=PATTERN")
        patterns.setdefault(name, [])
        if sep:
            patterns[name].append(pattern)
    return [Structure(n, tuple(p)) for n, p in patterns.items()]


def match_structures(
    structures: Mapping[int, Structure], source_names: Sequence[str]
) -> dict[int, tuple[str, ...]]:
    """Label value -> the source names (in file order) each structure takes; structures
    found nowhere are left out. Each source name goes to the first structure matching it."""
    found: dict[int, list[str]] = {}
    for source in source_names:
        for value, structure in structures.items():
            if structure.matches(source):
                found.setdefault(value, []).append(source)
                break
    return {v: tuple(found[v]) for v in structures if v in found}


def squash(name: str) -> str:
    """A name compared without case, spaces, ``_`` or ``-``."""
    return re.sub(r"[\s_\-]+", "", name).casefold()


def _is_regex(pattern: str) -> bool:
    return len(pattern) >= 2 and pattern.startswith("/") and pattern.endswith("/")

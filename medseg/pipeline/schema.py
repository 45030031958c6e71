"""Typed, frozen dataclasses built from plain YAML mappings, with precise error messages.

A small hand-written checker (no schema library): every field's type hint says what is
accepted (``bool``, ``int``, ``float``, ``str``, ``Path``, ``Literal[...]``, ``X | None``,
``tuple[X, ...]``, ``dict[K, V]``), and every error names the file, the dotted key and
what was expected.
Field ``metadata`` (built with :func:`doc`) carries the documentation, whether a path must
exist and whether the value takes part in a stage's hash.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from medseg.core.errors import ConfigError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a value came from: a file name for messages and the folder paths resolve from."""

    name: str
    base: Path


Check = Callable[[Any], "str | None"]


def doc(
    text: str, *, exists: bool = False, hashed: bool = True, check: Check | None = None
) -> dict[str, Any]:
    """Field metadata: documentation and validation of one key.

    ``exists``: a path that must exist; ``hashed=False``: the value does not change results
    (kept out of stage hashes); ``check(value)`` returns a problem description or None.
    """
    return {"doc": text, "exists": exists, "hashed": hashed, "check": check}


def in_range(lo: float, hi: float, *, hi_open: bool = False) -> Check:
    """Check: a number (or every number of a list) within [lo, hi] (or [lo, hi))."""

    def check(value: Any) -> str | None:
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if v is not None and not (lo <= v < hi if hi_open else lo <= v <= hi):
                return f"must be in [{lo}, {hi}{')' if hi_open else ']'}, got {v}"
        return None

    return check


def positive(value: Any) -> str | None:
    """Check: null, a positive number, or a list of positive numbers."""
    values = value if isinstance(value, tuple) else (value,)
    bad = [v for v in values if isinstance(v, int | float) and v <= 0]
    return f"must be positive, got {bad[0]}" if bad else None


def suggest(key: str, valid: list[str]) -> str:
    """' (did you mean 'x'?)' for the closest valid key, or ''."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def type_name(tp: Any) -> str:
    """Readable name of a type hint, as used in messages and the reference."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is tuple:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        value = type_name(args[1])
        return f"mapping of {type_name(args[0])} to {f'({value})' if '|' in value else value}"
    return {bool: "bool", int: "int", float: "number", str: "string", Path: "path"}.get(
        tp, str(tp)
    )


def _fail(src: Source, key: str, message: str) -> ConfigError:
    return ConfigError(f"'{key}': {message}", src.name)


def _convert(value: Any, tp: Any, key: str, src: Source, exists: bool) -> Any:
    """``value`` checked against type hint ``tp`` (paths resolved against ``src.base``)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _convert(value, options[0], key, src, exists)
        for arg in options:
            try:
                return _convert(value, arg, key, src, exists)
            except ConfigError:
                continue
        raise _fail(src, key, f"expected {type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise _fail(src, key, f"expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _fail(src, key, f"expected a mapping, got {value!r}")
        return {_convert(k, args[0], key, src, exists): _convert(v, args[1], f"{key}.{k}", src,
                                                                  exists)
                for k, v in value.items()}
    if origin is tuple:
        items = value if isinstance(value, list | tuple) else None
        if items is None:
            raise _fail(src, key, f"expected a list, got {value!r}")
        return tuple(_convert(v, args[0], f"{key}[{i}]", src, exists) for i, v in enumerate(items))
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(src, key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(src, key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(src, key, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(src, key, f"expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str | Path) or not str(value):
            raise _fail(src, key, f"expected a path, got {value!r}")
        path = (src.base / Path(value).expanduser()).resolve()
        if exists and not path.exists():
            raise _fail(src, key, f"path does not exist: {path}")
        return path
    raise TypeError(f"unsupported field type {tp!r} for {key}")


def hints(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass."""
    return typing.get_type_hints(cls)


def build(
    cls: type[T],
    raw: Mapping[str, Any],
    prefix: str,
    source_of: Callable[[str], Source],
) -> T:
    """Instance of dataclass ``cls`` from mapping ``raw`` (keys reported as ``prefix.key``).

    ``source_of(dotted_key)`` tells where each value came from (file or ``--set``).
    Unknown keys, missing required keys and wrong types raise :class:`ConfigError`.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    types_ = hints(cls)
    for key in raw:
        if key not in fields:
            dotted = f"{prefix}.{key}" if prefix else str(key)
            raise _fail(source_of(dotted), dotted,
                        f"unknown key{suggest(str(key), list(fields))}; valid keys: "
                        f"{', '.join(fields)}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        dotted = f"{prefix}.{name}" if prefix else name
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _fail(source_of(dotted), dotted, "required key is missing")
            continue
        tp = types_[name]
        if dataclasses.is_dataclass(tp):
            sub = raw[name] if raw[name] is not None else {}
            if not isinstance(sub, Mapping):
                raise _fail(source_of(dotted), dotted, f"expected a mapping, got {sub!r}")
            values[name] = build(tp, sub, dotted, source_of)
        else:
            src = source_of(dotted)
            values[name] = _convert(raw[name], tp, dotted, src, f.metadata.get("exists", False))
            check = f.metadata.get("check")
            problem = check(values[name]) if check else None
            if problem:
                raise _fail(src, dotted, problem)
    return cls(**values)


def to_plain(obj: Any, *, hashed_only: bool = False) -> Any:
    """Dataclass tree → plain YAML/JSON types (paths as strings, tuples as lists).

    With ``hashed_only`` fields marked ``hashed=False`` (worker counts, ...) are left out.
    """
    if dataclasses.is_dataclass(obj):
        return {
            f.name: to_plain(getattr(obj, f.name), hashed_only=hashed_only)
            for f in dataclasses.fields(obj)
            if not hashed_only or f.metadata.get("hashed", True)
        }
    if isinstance(obj, tuple | list):
        return [to_plain(v, hashed_only=hashed_only) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v, hashed_only=hashed_only) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def reference_rows(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, doc) for every leaf field of a dataclass tree."""
    rows: list[tuple[str, str, str, str]] = []
    types_ = hints(cls)
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}.{f.name}" if prefix else f.name
        tp = types_[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(reference_rows(tp, dotted))
            continue
        if f.default is not dataclasses.MISSING:
            default = json.dumps(to_plain(f.default))
        else:
            default = "required"
        meaning = f.metadata.get("doc", "")
        if not f.metadata.get("hashed", True):
            meaning += " *Not hashed.*"
        rows.append((dotted, type_name(tp), default, meaning))
    return rows

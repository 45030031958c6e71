"""The interactive part of the reports: a sortable table of cases linked to the viewer.

A report folder gets ``viewer/viewer.js`` and ``viewer/viewer.css`` (copied from
``medseg/metrics/viewer_assets``), one data script per case under ``viewer/cases/`` (see
:mod:`medseg.metrics.viewer_data`) and an ``index.html`` whose links are all relative, so
a copied or moved report folder keeps working, offline.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from medseg.core.atomic import write_text

ASSETS = ("viewer.js", "viewer.css")
VIEWER_DIR = "viewer"
CASES_DIR = "viewer/cases"


@dataclass(frozen=True)
class Column:
    """A column of the case table: ``key`` in the row dicts, shown under ``group``."""

    key: str
    title: str
    group: str = ""
    digits: int = 3


def copy_assets(out_dir: Path) -> None:
    """Write the viewer's script and style sheet into ``out_dir/viewer/``."""
    source = resources.files("medseg.metrics").joinpath("viewer_assets")
    for name in ASSETS:
        write_text(out_dir / VIEWER_DIR / name, source.joinpath(name).read_text("utf-8"))


def case_script_name(index: int) -> str:
    """The data script of the ``index``-th case, relative to the report folder (names never
    depend on case names, which may hold any character)."""
    return f"{CASES_DIR}/{index:05d}.js"


def case_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """A ``<table id="case-table">``: one row per case (``row["case"]``), sortable by every
    column (``data-col``/``data-v`` attributes read by ``viewer.js``)."""
    head = _header(columns)
    body = []
    for row in rows:
        case = str(row["case"])
        cells = [f'<td data-col="case" data-v="{_attr(case)}">'
                 f'<a href="#case={_attr(_quote(case))}">{html.escape(case)}</a></td>']
        for col in columns:
            value = row.get(col.key)
            cells.append(f'<td data-col="{_attr(col.key)}" data-v="{_sort_value(value)}">'
                         f"{_display(value, col.digits)}</td>")
        body.append(f'<tr data-case="{_attr(case)}">{"".join(cells)}</tr>')
    return (f'<table id="case-table"><thead>{head}</thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _header(columns: Sequence[Column]) -> str:
    groups: list[tuple[str, int]] = []
    for col in columns:
        if groups and groups[-1][0] == col.group:
            groups[-1] = (col.group, groups[-1][1] + 1)
        else:
            groups.append((col.group, 1))
    sortable = "".join(f'<th data-col="{_attr(c.key)}">{html.escape(c.title)}</th>'
                       for c in columns)
    if all(not g for g, _ in groups):
        return f'<tr><th data-col="case">case</th>{sortable}</tr>'
    top = "".join(f'<th colspan="{n}">{html.escape(g)}</th>' for g, n in groups)
    return f'<tr><th rowspan="2" data-col="case">case</th>{top}</tr><tr>{sortable}</tr>'


def _sort_value(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return _attr(f"{value:.9g}" if isinstance(value, float) else str(value))


def _display(value: Any, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.{digits}f}"
    return html.escape(str(value))


def _attr(text: str) -> str:
    return html.escape(text, quote=True)


def _quote(case: str) -> str:
    return quote(case, safe="")


def viewer_block(config: Mapping[str, Any]) -> str:
    """The viewer's mount point and its JSON configuration (see ``viewer.js``)."""
    data = json.dumps(config, allow_nan=False).replace("</", "<\\/")
    return (f'<div id="viewer"></div>'
            f'<script id="medseg-report" type="application/json">{data}</script>')


def viewer_config(
    labels: Mapping[int | str, str],
    cases: Mapping[str, Mapping[str, Any]],
    *,
    reference: bool,
    uncertainty: bool,
    sort_column: str,
    descending: bool,
) -> dict[str, Any]:
    """The JSON the viewer reads: labels, per-case entries (``file``, ``grid``,
    ``details``, ``montage``), which layers exist and the table's initial order."""
    return {
        # label layers only: regions (unions of labels, string keys) are scored, not drawn
        "labels": [[int(v), name] for v, name in labels.items() if isinstance(v, int)],
        "cases": {case: dict(entry) for case, entry in cases.items()},
        "layers": {"reference": reference, "uncertainty": uncertainty},
        "initial_sort": {"column": sort_column, "descending": descending},
    }


def page(title: str, body: str) -> str:
    """A whole HTML page using the viewer's assets (relative links only)."""
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        f'<link rel="stylesheet" href="{VIEWER_DIR}/viewer.css">'
        f'<script src="{VIEWER_DIR}/viewer.js"></script>'
        f"</head><body>{body}</body></html>\n"
    )


def review_section(table: str, config: Mapping[str, Any], note: str) -> str:
    """Table and viewer side by side, with a note under them."""
    return (f'<div class="review"><div class="case-table-wrap">{table}</div>'
            f"{viewer_block(config)}</div><p class='note'>{note}</p>")

"""``index.html``: one self-contained page with the summary, box plots and QC montages."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medseg.metrics.evaluate import CaseMetrics

TABLE_METRICS = ("dice", "iou", "hd95_mm", "assd_mm", "nsd")
STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1200px}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd}
.plots img{width:32%;min-width:300px}"""


def _fmt(stats: Mapping[str, Any] | None) -> str:
    if not stats or stats.get("mean") is None:
        return "–"
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def _summary_table(summary: Mapping[str, Any]) -> str:
    head = "".join(f"<th>{m}</th>" for m in TABLE_METRICS)
    rows = [f"<tr><th>class</th>{head}<th>one empty</th></tr>"]
    for name, stats in summary["per_class"].items():
        cells = "".join(f"<td>{_fmt(stats[m])}</td>" for m in TABLE_METRICS)
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}<td>{stats['n_one_empty']}</td></tr>")
    overall = summary["overall"]
    cells = "".join(f"<td>{_fmt(overall.get(m))}</td>" for m in TABLE_METRICS)
    rows.append(f"<tr><td><b>overall</b></td>{cells}<td></td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _case_line(metrics: CaseMetrics, labels: Mapping[int, str]) -> str:
    parts = []
    for value, name in labels.items():
        m = metrics.get(value, {})
        hd = m.get("hd95_mm", math.nan)
        parts.append(f"{html.escape(name)}: Dice {m.get('dice', math.nan):.3f}, HD95 {hd:.2f} mm")
    return "; ".join(parts)


def _case_roles(summary: Mapping[str, Any]) -> str:
    """Which cases served for what (training, validation for checkpoint selection,
    evaluation): the evaluated cases took no part in any choice."""
    roles = summary.get("cases")
    if not roles:
        return ""
    items = "".join(
        f"<li><b>{html.escape(role)}</b> ({len(ids)}): "
        f"{html.escape(', '.join(ids[:40]))}{' …' if len(ids) > 40 else ''}</li>"
        for role, ids in roles.items())
    return f"<h2>Cases</h2><ul>{items}</ul>"


def _failures(summary: Mapping[str, Any]) -> str:
    items = [f"<li>{html.escape(c)}: {html.escape(msg)}</li>"
             for c, msg in summary.get("failed", {}).items()]
    items += [f"<li>{html.escape(c)}: no prediction</li>"
              for c in summary.get("missing_predictions", [])]
    return f"<h2>Not evaluated</h2><ul>{''.join(items)}</ul>" if items else ""


def index_html(
    out_dir: Path,
    summary: Mapping[str, Any],
    plots: Mapping[str, Path],
    qc: Sequence[tuple[str, Path]],
    per_case: Mapping[str, CaseMetrics],
    labels: Mapping[int, str],
) -> str:
    """The page's HTML; image links are relative to ``out_dir``."""
    def rel(path: Path) -> str:
        return html.escape(path.relative_to(out_dir).as_posix(), quote=True)

    plot_tags = "".join(f'<img src="{rel(p)}" alt="{html.escape(m)}">' for m, p in plots.items())
    qc_blocks = "".join(
        f"<h3>{html.escape(case)}</h3><p>{_case_line(per_case[case], labels)}</p>"
        f'<img src="{rel(path)}" alt="QC {html.escape(case)}">'
        for case, path in qc
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>medseg evaluation</title>"
        f"<style>{STYLE}</style></head><body><h1>medseg evaluation</h1>"
        f"<p>{summary['n_cases']} cases; NSD tolerance {summary['nsd_tolerance_mm']} mm; "
        "mean ± std over cases where defined. "
        '<a href="per_case.csv">per_case.csv</a> · <a href="summary.json">summary.json</a></p>'
        f"{_summary_table(summary)}{_failures(summary)}{_case_roles(summary)}"
        f"<h2>Distributions</h2><div class='plots'>{plot_tags}</div>"
        f"<h2>QC: {len(qc)} worst cases by mean Dice</h2>"
        "<p>green: reference, red: prediction</p>"
        f"{qc_blocks}</body></html>\n"
    )

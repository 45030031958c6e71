"""``index.html`` of ``medseg evaluate``: the summary, a sortable table of every case linked to
the slice viewer, the box plots and the QC montages. All links are relative."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medseg.metrics import viewer_page
from medseg.metrics.evaluate import CaseMetrics
from medseg.metrics.viewer_data import MAX_EDGE, MAX_VOXELS, mebibytes
from medseg.metrics.viewer_page import Column

TABLE_METRICS = ("dice", "iou", "hd95_mm", "assd_mm", "nsd")


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


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def case_columns(labels: Mapping[int, str], with_scores: bool) -> list[Column]:
    """Columns of the per-case table: means, uncertainty, then Dice/NSD/volumes per class."""
    columns = [Column("mean_dice", "mean Dice"), Column("mean_nsd", "mean NSD")]
    if with_scores:
        columns.append(Column("uncertainty", "uncertainty"))
    if len(labels) > 1 or with_scores:
        columns = [Column(c.key, c.title, "all classes", c.digits) for c in columns]
    for value, name in labels.items():
        columns += [Column(f"dice_{value}", "Dice", name), Column(f"nsd_{value}", "NSD", name),
                    Column(f"pred_ml_{value}", "pred mL", name, 2),
                    Column(f"ref_ml_{value}", "ref mL", name, 2)]
    return columns


def case_rows(
    per_case: Mapping[str, CaseMetrics], labels: Mapping[int, str],
    scores: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """One dict per case with the keys of :func:`case_columns`."""
    rows = []
    for case, metrics in per_case.items():
        row: dict[str, Any] = {
            "case": case,
            "mean_dice": _mean([metrics[v]["dice"] for v in labels]),
            "mean_nsd": _mean([metrics[v]["nsd"] for v in labels]),
            "uncertainty": scores[case]["score"] if case in scores else None,
        }
        for v in labels:
            row.update({f"dice_{v}": metrics[v]["dice"], f"nsd_{v}": metrics[v]["nsd"],
                        f"pred_ml_{v}": metrics[v]["pred_volume_ml"],
                        f"ref_ml_{v}": metrics[v]["ref_volume_ml"]})
        rows.append(row)
    return rows


def _details(metrics: CaseMetrics, labels: Mapping[int, str],
             score: Mapping[str, Any] | None) -> list[list[str]]:
    lines = []
    for value, name in labels.items():
        m = metrics[value]
        hd = f"{m['hd95_mm']:.2f} mm" if math.isfinite(m["hd95_mm"]) else "undefined"
        lines.append([name, f"Dice {m['dice']:.3f} · NSD {m['nsd']:.3f} · HD95 {hd} · "
                            f"{m['pred_volume_ml']:.2f} / {m['ref_volume_ml']:.2f} mL "
                            "(prediction / reference)"])
    if score is not None:
        lines.append(["uncertainty", f"{score['score']:.3f} ({score.get('members', 1)} "
                                     "ensemble member(s))"])
    return lines


def _viewer_section(
    out_dir: Path, per_case: Mapping[str, CaseMetrics], labels: Mapping[int, str],
    viewer: Mapping[str, Mapping[str, Any]], scores: Mapping[str, Mapping[str, Any]],
    qc: Sequence[tuple[str, Path]],
) -> str:
    montages = {case: path.relative_to(out_dir).as_posix() for case, path in qc}
    entries = {
        case: {"file": viewer[case]["file"], "grid": viewer[case]["grid"],
               "details": _details(per_case[case], labels, scores.get(case)),
               "montage": montages.get(case)}
        for case in per_case if case in viewer
    }
    config = viewer_page.viewer_config(labels, entries, reference=True,
                                       uncertainty=bool(scores), sort_column="mean_dice",
                                       descending=False)
    table = viewer_page.case_table(case_rows(per_case, labels, scores),
                                   case_columns(labels, bool(scores)))
    return viewer_page.review_section(table, config, viewer_note(viewer))


def viewer_note(viewer: Mapping[str, Mapping[str, Any]]) -> str:
    """How to use the viewer, how many cases were downsampled for it and its data size."""
    shrunk = sum(bool(v.get("downsampled")) for v in viewer.values())
    size = sum(int(v.get("bytes", 0)) for v in viewer.values())
    return (
        "Click a case to show it; click a column title to sort. In the viewer: mouse wheel "
        "or arrow keys scroll slices, a click picks the point the other planes go through. "
        "Radiological convention (the patient's right on the left). "
        f"{shrunk} of {len(viewer)} case(s) are downsampled for the viewer (at most "
        f"{MAX_EDGE} voxels per axis, {MAX_VOXELS / 1e6:.1f} million in all); "
        f"viewer data {mebibytes(size)}. Metrics are computed on the full-resolution grids."
    )


def index_html(
    out_dir: Path,
    summary: Mapping[str, Any],
    plots: Mapping[str, Path],
    qc: Sequence[tuple[str, Path]],
    per_case: Mapping[str, CaseMetrics],
    labels: Mapping[int, str],
    viewer: Mapping[str, Mapping[str, Any]] | None = None,
    scores: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """The page's HTML. ``viewer``: case -> ``{"file", "grid", "bytes", "downsampled"}`` of
    its viewer data; ``scores``: case -> its uncertainty score file content."""
    def rel(path: Path) -> str:
        return html.escape(path.relative_to(out_dir).as_posix(), quote=True)

    plot_tags = "".join(f'<img src="{rel(p)}" alt="{html.escape(m)}">' for m, p in plots.items())
    qc_blocks = "".join(
        f"<h3>{html.escape(case)}</h3><p>{_case_line(per_case[case], labels)}</p>"
        f'<img src="{rel(path)}" alt="QC {html.escape(case)}">'
        for case, path in qc
    )
    cases = ""
    if per_case and viewer:
        cases = "<h2>Cases</h2>" + _viewer_section(out_dir, per_case, labels, viewer,
                                                   scores or {}, qc)
    body = (
        "<h1>medseg evaluation</h1>"
        f"<p>{summary['n_cases']} cases; NSD tolerance {summary['nsd_tolerance_mm']} mm; "
        "mean ± std over cases where defined. "
        '<a href="per_case.csv">per_case.csv</a> · <a href="summary.json">summary.json</a></p>'
        f"{_summary_table(summary)}{_failures(summary)}{_case_roles(summary)}{cases}"
        f"<h2>Distributions</h2><div class='plots'>{plot_tags}</div>"
        f"<h2>QC: {len(qc)} worst cases by mean Dice</h2>"
        "<p>green: reference, red: prediction</p>"
        f"{qc_blocks}"
    )
    return viewer_page.page("medseg evaluation", body)

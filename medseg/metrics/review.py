"""The review report of predictions without references (``medseg predict --report``).

``OUT/report/index.html`` ranks the cases by their uncertainty score (most uncertain first;
ties and cases without a score by name, so the order never depends on the order of the
inputs) in a sortable table with the predicted volume and uncertainty of each label; a
click shows the case in the slice viewer (image, prediction, uncertainty map) with its QC
montage (``report/qc/<case>.png``). Like the evaluation report, the folder is
self-contained: relative links only, no network.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from medseg.core import Volume
from medseg.core.atomic import write_text
from medseg.core.errors import MedsegError
from medseg.metrics import qc, report, viewer_data, viewer_page
from medseg.metrics.evaluate import label_array
from medseg.metrics.index_page import viewer_note
from medseg.metrics.overlap import volume_ml
from medseg.metrics.viewer_data import CaseLayers
from medseg.metrics.viewer_page import Column

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ReviewCase:
    """One predicted case: how to read its volumes (prediction, image, uncertainty map; no
    reference) when its turn comes, and its uncertainty score file content."""

    name: str
    load: Callable[[], CaseLayers]
    score: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ReviewReport:
    """What :func:`write_review_report` wrote."""

    index: Path
    ranking: tuple[str, ...]  # case names, most uncertain first
    failed: dict[str, str]  # cases that could not be shown, with the reason


def rank_cases(cases: Sequence[ReviewCase]) -> list[ReviewCase]:
    """Most uncertain first; ties, then cases without a score, by name."""
    def key(case: ReviewCase) -> tuple[bool, float, str]:
        score = case.score.get("score") if case.score else None
        return (score is None, -(score or 0.0), case.name)

    return sorted(cases, key=key)


def write_review_report(
    out_dir: str | Path,
    cases: Sequence[ReviewCase],
    labels: Mapping[int, str],
    *,
    model: str = "",
    not_predicted: Mapping[str, str] | None = None,
    progress: bool = True,
) -> ReviewReport:
    """Write ``out_dir/index.html`` with the viewer data and QC montage of every case."""
    out = Path(out_dir)
    viewer_page.copy_assets(out)
    ranked = rank_cases(cases)
    rows, entries, viewer, failed = [], {}, {}, {}
    for rank, case in enumerate(tqdm(ranked, desc="report", unit="case", disable=not progress)):
        try:
            entry, row, info = _case_report(out, rank, case, labels)
        except MedsegError as exc:
            log.warning("%s: not in the report: %s", case.name, exc)
            failed[case.name] = str(exc)
            continue
        rows.append(row)
        entries[case.name] = entry
        viewer[case.name] = info
    page = _page(rows, entries, viewer, labels, model, {**(not_predicted or {}), **failed})
    write_text(out / "index.html", page)
    return ReviewReport(out / "index.html", tuple(c.name for c in ranked if c.name in entries),
                        failed)


def _case_report(
    out: Path, rank: int, case: ReviewCase, labels: Mapping[int, str]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Viewer script, montage, table row and viewer entry of one case."""
    layers = case.load()
    data = viewer_data.case_data(layers)
    script = viewer_page.case_script_name(rank)
    size = viewer_data.write_case_script(out / script, case.name, data)
    per_label = label_summary(layers.prediction, labels, case.score)
    montage = out / "qc" / f"{case.name}.png"
    report.save_figure(qc.qc_montage(None, layers.prediction, labels, per_label,
                                     image=layers.image, title=case.name), montage)
    row: dict[str, Any] = {"case": case.name, "rank": rank + 1,
                           "uncertainty": case.score.get("score") if case.score else None}
    for value, m in per_label.items():
        row[f"ml_{value}"] = m["pred_volume_ml"]
        row[f"unc_{value}"] = m.get("uncertainty")
    entry = {"file": script, "grid": viewer_data.describe_grid(data),
             "details": _details(per_label, labels, case.score),
             "montage": montage.relative_to(out).as_posix()}
    info = {"bytes": size, "downsampled": data["downsampled"]}
    return entry, row, info


def label_summary(
    pred: Volume, labels: Mapping[int, str], score: Mapping[str, Any] | None
) -> dict[int, dict[str, float]]:
    """Per label: predicted volume (mL) and, when scored, the label's uncertainty score."""
    arr = label_array(pred, "prediction")
    per_label = (score or {}).get("per_label", {})
    out = {}
    for value in labels:
        m: dict[str, float] = {"pred_volume_ml": volume_ml(arr == value, pred.spacing)}
        if str(value) in per_label:
            m["uncertainty"] = float(per_label[str(value)]["score"])
        out[value] = m
    return out


def _details(
    per_label: Mapping[int, Mapping[str, float]], labels: Mapping[int, str],
    score: Mapping[str, Any] | None,
) -> list[list[str]]:
    lines = []
    for value, m in per_label.items():
        text = f"{m['pred_volume_ml']:.2f} mL"
        if "uncertainty" in m:
            text += f" · uncertainty {m['uncertainty']:.3f}"
        lines.append([labels[value], text])
    if score is not None:
        lines.append(["uncertainty", f"{score['score']:.3f} (mean over labels; "
                                     f"{score.get('members', 1)} ensemble member(s))"])
    return lines


def _columns(labels: Mapping[int, str], scored: bool) -> list[Column]:
    columns = [Column("rank", "rank", "", 0)]
    if scored:
        columns.append(Column("uncertainty", "uncertainty"))
    for value, name in labels.items():
        columns.append(Column(f"ml_{value}", "mL", name, 2))
        if scored:
            columns.append(Column(f"unc_{value}", "uncertainty", name))
    return columns


def _page(
    rows: Sequence[Mapping[str, Any]], entries: Mapping[str, Mapping[str, Any]],
    viewer: Mapping[str, Mapping[str, Any]], labels: Mapping[int, str], model: str,
    failed: Mapping[str, str],
) -> str:
    scored = any(r["uncertainty"] is not None for r in rows)
    config = viewer_page.viewer_config(labels, entries, reference=False, uncertainty=scored,
                                       sort_column="rank", descending=False)
    table = viewer_page.case_table(rows, _columns(labels, scored))
    not_shown = "".join(f"<li>{html.escape(c)}: {html.escape(m)}</li>"
                        for c, m in sorted(failed.items()))
    body = (
        "<h1>medseg prediction review</h1>"
        f"<p>{len(rows)} case(s)" + (f" predicted with {html.escape(model)}" if model else "")
        + ". " + _ranking_text(scored) + "</p>"
        + viewer_page.review_section(table, config, viewer_note(viewer))
        + (f"<h2>Not in the report</h2><ul>{not_shown}</ul>" if not_shown else "")
    )
    return viewer_page.page("medseg prediction review", body)


def _ranking_text(scored: bool) -> str:
    if not scored:
        return "No uncertainty scores were found, so the cases are in name order."
    return ("Cases are ranked by their uncertainty score, most uncertain first: per label, "
            "the entropy of the ensembled probabilities summed over the voxels predicted "
            "as the label (and, weighted by how close they come, where it is the runner-up), "
            "U, against the predicted voxels, P, as U / (2P + U), an estimate of 1 − Dice; "
            "the case score is the mean over labels. Look at the top of the list first.")

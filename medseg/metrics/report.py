"""Evaluation reports: ``per_case.csv``, ``summary.json`` and one box plot per metric.

``summary.json`` holds, per class (keyed by label name) and ``overall``, the mean, median
and (population) standard deviation of each metric over the cases where it is defined,
with ``n`` (defined) and ``n_nan`` (undefined: exactly one of prediction/reference empty).
``overall`` describes each case's mean over classes. Per class it also counts the cases
where the reference or the prediction is empty.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medseg.core.atomic import atomic_path, write_json, write_text
from medseg.metrics.evaluate import METRICS, CaseMetrics

SCORE_METRICS = ("dice", "iou", "precision", "recall", "hd95_mm", "assd_mm", "nsd")
METRIC_TITLES = {
    "dice": "Dice", "iou": "IoU", "precision": "Precision", "recall": "Recall",
    "hd95_mm": "HD95 (mm)", "assd_mm": "ASSD (mm)", "nsd": "Normalized surface Dice",
    "pred_volume_ml": "Predicted volume (mL)", "ref_volume_ml": "Reference volume (mL)",
}
CSV_COLUMNS = ("case", "label", "name", *METRICS, "scored")


def metric_values(per_case: Mapping[str, CaseMetrics], label: int | str, metric: str
                  ) -> np.ndarray:
    """One metric of one label over all cases (in case order), NaN where undefined."""
    return np.array([metrics[label][metric] for metrics in per_case.values()], dtype=np.float64)


def describe(values: np.ndarray) -> dict[str, float | int | None]:
    """Mean, median, std of the finite values, with how many there are and how many are NaN."""
    finite = values[np.isfinite(values)]
    stats: dict[str, float | int | None] = {"mean": None, "median": None, "std": None}
    if finite.size:
        stats = {"mean": float(finite.mean()), "median": float(np.median(finite)),
                 "std": float(finite.std())}
    return {**stats, "n": int(finite.size), "n_nan": int(values.size - finite.size)}


def case_means(per_case: Mapping[str, CaseMetrics], metric: str) -> np.ndarray:
    """Each case's mean of ``metric`` over its classes (NaN classes left out)."""
    means = []
    for metrics in per_case.values():
        vals = np.array([m[metric] for m in metrics.values()], dtype=np.float64)
        finite = vals[np.isfinite(vals)]
        means.append(float(finite.mean()) if finite.size else math.nan)
    return np.array(means, dtype=np.float64)


def summarize(
    per_case: Mapping[str, CaseMetrics], labels: Mapping[int | str, str],
    nsd_tolerance_mm: float,
) -> dict[str, Any]:
    """The ``summary.json`` content (see the module docstring)."""
    per_class = {}
    for value, name in labels.items():
        scored = np.array([m[value].get("scored", 1.0) > 0 for m in per_case.values()],
                          dtype=bool)
        pred_empty = (metric_values(per_case, value, "pred_volume_ml") == 0)[scored]
        ref_empty = (metric_values(per_case, value, "ref_volume_ml") == 0)[scored]
        per_class[name] = {
            "label": value,
            **{m: describe(metric_values(per_case, value, m)) for m in METRICS},
            "n_one_empty": int(np.count_nonzero(pred_empty ^ ref_empty)),
            "n_missed": int(np.count_nonzero(pred_empty & ~ref_empty)),
            "n_spurious": int(np.count_nonzero(ref_empty & ~pred_empty)),
            "n_both_empty": int(np.count_nonzero(pred_empty & ref_empty)),
            "n_not_scored": int(np.count_nonzero(~scored)),
        }
    return {
        "n_cases": len(per_case),
        "nsd_tolerance_mm": nsd_tolerance_mm,
        "labels": {str(v): n for v, n in labels.items()},
        "per_class": per_class,
        "overall": {m: describe(case_means(per_case, m)) for m in SCORE_METRICS},
    }


def per_case_rows(
    per_case: Mapping[str, CaseMetrics], labels: Mapping[int, str]
) -> list[dict[str, Any]]:
    """One row per (case, label) with the columns of :data:`CSV_COLUMNS`."""
    return [
        {"case": case, "label": value, "name": name, **metrics[value]}
        for case, metrics in per_case.items()
        for value, name in labels.items()
    ]


def write_per_case_csv(
    path: Path, per_case: Mapping[str, CaseMetrics], labels: Mapping[int, str]
) -> None:
    """Write ``per_case.csv`` atomically (NaN written as ``nan``)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(per_case_rows(per_case, labels))
    write_text(path, buffer.getvalue())


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    """Write ``summary.json`` atomically."""
    write_json(path, summary)


def box_plot(
    per_case: Mapping[str, CaseMetrics], labels: Mapping[int, str], metric: str
) -> Figure:
    """A figure with one box (and the individual cases as dots) per class for ``metric``."""
    fig = Figure(figsize=(1.2 + 1.4 * len(labels), 4.0), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    data, ticks = [], []
    for value, name in labels.items():
        vals = metric_values(per_case, value, metric)
        finite = vals[np.isfinite(vals)]
        data.append(finite)
        n_nan = vals.size - finite.size
        ticks.append(f"{name}\nn={finite.size}" + (f", {n_nan} NaN" if n_nan else ""))
    positions = np.arange(1, len(data) + 1)
    ax.boxplot(data, positions=positions, widths=0.5, showfliers=False)
    rng = np.random.default_rng(0)
    for pos, vals in zip(positions, data, strict=True):
        ax.scatter(pos + rng.uniform(-0.12, 0.12, vals.size), vals, s=10, alpha=0.6, zorder=3)
    ax.set_xticks(positions, ticks)
    ax.set_title(METRIC_TITLES.get(metric, metric))
    ax.grid(axis="y", alpha=0.3)
    return fig


def save_figure(fig: Figure, path: Path, dpi: int = 100) -> None:
    """Save a matplotlib figure as PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


def write_box_plots(
    folder: Path,
    per_case: Mapping[str, CaseMetrics],
    labels: Mapping[int, str],
    metrics: Sequence[str] = METRICS,
) -> dict[str, Path]:
    """One ``box_<metric>.png`` per metric in ``folder``; returns metric -> path."""
    paths = {}
    for metric in metrics:
        paths[metric] = folder / f"box_{metric}.png"
        save_figure(box_plot(per_case, labels, metric), paths[metric])
    return paths


def format_summary(summary: Mapping[str, Any]) -> str:
    """A one-screen text table: mean ± std per class and overall, with empty-case counts."""
    columns = ("dice", "hd95_mm", "assd_mm", "nsd")
    header = ["class", "Dice", "HD95 mm", "ASSD mm", f"NSD@{summary['nsd_tolerance_mm']:g}mm",
              "n", "one empty"]
    rows = [header]
    for name, stats in summary["per_class"].items():
        rows.append([name, *(_mean_std(stats[m]) for m in columns),
                     str(stats["dice"]["n"]), str(stats["n_one_empty"])])
    overall = summary["overall"]
    rows.append(["overall", *(_mean_std(overall[m]) for m in columns),
                 str(summary["n_cases"]), ""])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _mean_std(stats: Mapping[str, Any]) -> str:
    return "–" if stats["mean"] is None else f"{stats['mean']:.3f} ± {stats['std']:.3f}"

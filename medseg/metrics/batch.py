"""Evaluate a folder of predictions against a folder of references and write the report.

Cases are matched by name (:mod:`medseg.metrics.cases`) and evaluated in parallel worker
processes. A case that cannot be read or compared is recorded under ``failed`` (with the
reason) instead of stopping the run; references without a prediction are listed under
``missing_predictions``. Output folder layout::

    OUT/per_case.csv  OUT/summary.json  OUT/index.html
    OUT/plots/box_<metric>.png  OUT/qc/<case>.png
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from medseg.core.atomic import write_text
from medseg.core.errors import MedsegError, OutputError
from medseg.io import read_volume
from medseg.metrics import index_page, qc, report
from medseg.metrics import labels as label_names
from medseg.metrics.cases import CasePairs, list_volumes, match_cases
from medseg.metrics.evaluate import (
    DEFAULT_NSD_TOLERANCE_MM,
    CaseMetrics,
    evaluate_case,
    region_key,
    with_all_labels,
)

log = logging.getLogger(__name__)
DEFAULT_QC_CASES = 10


@dataclass(frozen=True)
class FolderEvaluation:
    """What :func:`evaluate_folders` computed and wrote."""

    out_dir: Path
    labels: dict[int, str]
    per_case: dict[str, CaseMetrics]
    summary: dict[str, Any]
    failed: dict[str, str]
    missing_predictions: tuple[str, ...]
    qc_cases: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """True when every reference case had a prediction and was evaluated."""
        return not self.failed and not self.missing_predictions


@dataclass(frozen=True)
class _Task:
    case: str
    pred: Path
    ref: Path
    labels: tuple[int, ...] | None
    nsd_tolerance_mm: float
    resample_pred: bool
    regions: tuple[tuple[str, tuple[int, ...]], ...] = ()
    partial_labels: bool = False


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    out_dir: str | Path,
    labels: Mapping[int, str] | None = None,
    nsd_tolerance: float = DEFAULT_NSD_TOLERANCE_MM,
    workers: int = 1,
    images_dir: str | Path | None = None,
    resample_pred: bool = False,
    qc_cases: int = DEFAULT_QC_CASES,
    progress: bool = True,
    regions: Mapping[str, Sequence[int]] | None = None,
    partial_labels: bool = False,
    case_roles: Mapping[str, Sequence[str]] | None = None,
) -> FolderEvaluation:
    """Evaluate every prediction in ``pred_dir`` against its reference in ``gt_dir``.

    ``labels`` (value -> name) defaults to a ``dataset.json`` in or above ``gt_dir``, else
    to every non-zero value found; ``regions`` (name -> label values) are scored too, and
    with ``partial_labels`` a class absent from a reference is not scored in that case
    (:func:`~medseg.metrics.evaluate.evaluate_case`). ``case_roles`` (e.g. which cases
    trained, validated and are evaluated) goes into ``summary.json`` as ``cases``. Writes
    the report into ``out_dir`` (see module docs).
    """
    out = Path(out_dir)
    _check_out_dir(out, Path(pred_dir), Path(gt_dir))
    pairs = match_cases(pred_dir, gt_dir)
    if pairs.missing_predictions:
        log.warning("%d reference case(s) have no prediction: %s",
                    len(pairs.missing_predictions), ", ".join(pairs.missing_predictions[:5]))
    known = dict(labels) if labels is not None else _dataset_labels(Path(gt_dir))
    region_items = tuple((name, tuple(int(v) for v in values))
                         for name, values in (regions or {}).items())
    tasks = [
        _Task(case, pred, ref, tuple(known) if known else None, nsd_tolerance, resample_pred,
              region_items, partial_labels)
        for case, pred, ref in pairs.pairs
    ]
    per_case, failed = _run(tasks, workers, progress)
    region_names = {region_key(values): name for name, values in region_items}
    values = known.keys() if known else {v for m in per_case.values() for v in m
                                         if v not in region_names}
    class_names = label_names.name_labels(values, known)
    names: dict[int | str, str] = {**class_names, **region_names}
    per_case = {c: with_all_labels(per_case[c], names) for c in sorted(per_case)}
    summary = {
        **report.summarize(per_case, names, nsd_tolerance),
        "partial_labels": partial_labels,
        "regions": {name: list(values) for name, values in region_items},
        "failed": dict(sorted(failed.items())),
        "missing_predictions": list(pairs.missing_predictions),
        "unmatched_predictions": list(pairs.unmatched_predictions),
        **({"cases": {role: list(ids) for role, ids in case_roles.items()}}
           if case_roles else {}),
    }
    worst = qc.worst_cases(per_case, qc_cases)
    _write_report(out, per_case, names, summary, pairs, worst, images_dir, progress)
    return FolderEvaluation(out, names, per_case, summary, failed, pairs.missing_predictions,
                            tuple(worst))


def _check_out_dir(out: Path, *inputs: Path) -> None:
    resolved = out.resolve()
    for folder in inputs:
        inside = folder.resolve()
        if resolved == inside or inside in resolved.parents:
            raise OutputError(f"the report folder must not be inside the input folder {folder}",
                              out)


def _dataset_labels(gt_dir: Path) -> dict[int, str]:
    path = label_names.find_dataset_json(gt_dir)
    return label_names.labels_from_dataset_json(path) if path else {}


def _run(
    tasks: Sequence[_Task], workers: int, progress: bool
) -> tuple[dict[str, CaseMetrics], dict[str, str]]:
    per_case: dict[str, CaseMetrics] = {}
    failed: dict[str, str] = {}
    bar = tqdm(total=len(tasks), desc="evaluate", unit="case", disable=not progress)
    with bar:
        for case, metrics, error in _results(tasks, workers):
            if error is None:
                per_case[case] = metrics
            else:
                failed[case] = error
                log.warning("%s: %s", case, error)
            bar.update()
    return per_case, failed


def _results(
    tasks: Sequence[_Task], workers: int
) -> Iterator[tuple[str, CaseMetrics, str | None]]:
    if workers <= 1 or len(tasks) <= 1:
        yield from map(_evaluate_task, tasks)
        return
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker)
    try:
        futures: list[Future] = [pool.submit(_evaluate_task, t) for t in tasks]
        for future in as_completed(futures):
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _init_worker() -> None:
    torch.set_num_threads(1)  # parallelism comes from the processes


def _evaluate_task(task: _Task) -> tuple[str, CaseMetrics, str | None]:
    try:
        pred, ref = read_volume(task.pred), read_volume(task.ref)
        metrics = evaluate_case(pred, ref, labels=task.labels,
                                nsd_tolerance_mm=task.nsd_tolerance_mm,
                                resample_pred=task.resample_pred,
                                regions=dict(task.regions), partial_labels=task.partial_labels)
    except MedsegError as exc:
        return task.case, {}, str(exc)
    return task.case, metrics, None


def _write_report(
    out: Path,
    per_case: dict[str, CaseMetrics],
    names: dict[int | str, str],
    summary: dict[str, Any],
    pairs: CasePairs,
    worst: Sequence[str],
    images_dir: str | Path | None,
    progress: bool,
) -> None:
    report.write_per_case_csv(out / "per_case.csv", per_case, names)
    report.write_summary(out / "summary.json", summary)
    plots = report.write_box_plots(out / "plots", per_case, names) if per_case else {}
    paths = {c: (p, r) for c, p, r in pairs.pairs}
    images = list_volumes(images_dir) if images_dir is not None else {}
    qc_paths = []
    for case in tqdm(worst, desc="qc", unit="case", disable=not progress):
        target = out / "qc" / f"{case}.png"
        image = images.get(case) or images.get(f"{case}_0000")
        try:
            classes = {k: v for k, v in names.items() if isinstance(k, int)}  # no regions
            _write_qc(target, case, *paths[case], image, classes, per_case[case])
        except MedsegError as exc:
            log.warning("%s: no QC picture: %s", case, exc)
            continue
        qc_paths.append((case, target))
    page = index_page.index_html(out, summary, plots, qc_paths, per_case, names)
    write_text(out / "index.html", page)


def _write_qc(
    target: Path, case: str, pred_path: Path, ref_path: Path, image_path: Path | None,
    names: dict[int, str], metrics: CaseMetrics,
) -> None:
    image = read_volume(image_path) if image_path is not None else None
    fig = qc.qc_montage(read_volume(ref_path), read_volume(pred_path), names, metrics,
                        image=image, title=case)
    report.save_figure(fig, target)

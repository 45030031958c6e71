"""Evaluate a folder of predictions against a folder of references and write the report.

Cases are matched by name (:mod:`medseg.metrics.cases`) and evaluated in parallel worker
processes. A case that cannot be read or compared is recorded under ``failed`` (with the
reason) instead of stopping the run; references without a prediction are listed under
``missing_predictions``. Each worker also writes the case's data for the report's slice
viewer (image, prediction, reference and, when prediction wrote one next to the label
map, the uncertainty map). Output folder layout::

    OUT/per_case.csv  OUT/summary.json  OUT/index.html
    OUT/plots/box_<metric>.png  OUT/qc/<case>.png
    OUT/viewer/viewer.js  OUT/viewer/viewer.css  OUT/viewer/cases/<n>.js
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from medseg.core import Volume, sidecars
from medseg.core.atomic import write_text
from medseg.core.errors import MedsegError, OutputError
from medseg.io import read_volume
from medseg.metrics import index_page, qc, report, viewer_data, viewer_page
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
    uncertainty: dict[str, dict[str, Any]] = field(default_factory=dict)  # case -> score file

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
    image: Path | None = None
    uncertainty: Path | None = None
    viewer_script: str | None = None  # relative to the report folder
    out_dir: Path | None = None
    modality: str | None = None


@dataclass(frozen=True)
class _Outcome:
    case: str
    metrics: CaseMetrics
    error: str | None = None
    viewer: dict[str, Any] | None = None  # see index_page.index_html


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
    modality: str | None = None,
) -> FolderEvaluation:
    """Evaluate every prediction in ``pred_dir`` against its reference in ``gt_dir``.

    ``labels`` (value -> name) defaults to a ``dataset.json`` in or above ``gt_dir``, else
    to every non-zero value found; ``regions`` (name -> label values) are scored too, and
    with ``partial_labels`` a class absent from a reference is not scored in that case
    (:func:`~medseg.metrics.evaluate.evaluate_case`). ``case_roles`` (e.g. which cases
    trained, validated and are evaluated) goes into ``summary.json`` as ``cases``.
    ``modality`` of the images ("CT" offers CT window presets in the viewer) is guessed
    from their intensities when not given. Writes the report into ``out_dir`` (see module
    docs).
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
    images = list_volumes(images_dir) if images_dir is not None else {}
    scores = {case: score for case, _, _ in pairs.pairs
              if (score := sidecars.read_uncertainty_score(pred_dir, case)) is not None}
    tasks = [
        _Task(case, pred, ref, tuple(known) if known else None, nsd_tolerance, resample_pred,
              region_items, partial_labels, image=images.get(case) or images.get(f"{case}_0000"),
              uncertainty=_existing(sidecars.uncertainty_map_path(pred_dir, case)),
              viewer_script=viewer_page.case_script_name(i), out_dir=out, modality=modality)
        for i, (case, pred, ref) in enumerate(pairs.pairs)
    ]
    per_case, failed, viewer = _run(tasks, workers, progress)
    region_names = {region_key(values): name for name, values in region_items}
    values = known.keys() if known else {v for m in per_case.values() for v in m
                                         if v not in region_names}
    class_names = label_names.name_labels(values, known)
    names: dict[int | str, str] = {**class_names, **region_names}
    per_case = {c: with_all_labels(per_case[c], names, partial_labels)
                for c in sorted(per_case)}
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
    _write_report(out, per_case, names, summary, pairs, worst, images, progress,
                  viewer, scores)
    return FolderEvaluation(out, names, per_case, summary, failed, pairs.missing_predictions,
                            tuple(worst), scores)


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


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
) -> tuple[dict[str, CaseMetrics], dict[str, str], dict[str, dict[str, Any]]]:
    per_case: dict[str, CaseMetrics] = {}
    failed: dict[str, str] = {}
    viewer: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(tasks), desc="evaluate", unit="case", disable=not progress)
    with bar:
        for outcome in _results(tasks, workers):
            if outcome.error is None:
                per_case[outcome.case] = outcome.metrics
            else:
                failed[outcome.case] = outcome.error
                log.warning("%s: %s", outcome.case, outcome.error)
            if outcome.viewer is not None:
                viewer[outcome.case] = outcome.viewer
            bar.update()
    return per_case, failed, viewer


def _results(tasks: Sequence[_Task], workers: int) -> Iterator[_Outcome]:
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


def _evaluate_task(task: _Task) -> _Outcome:
    try:
        pred, ref = read_volume(task.pred), read_volume(task.ref)
        metrics = evaluate_case(pred, ref, labels=task.labels,
                                nsd_tolerance_mm=task.nsd_tolerance_mm,
                                resample_pred=task.resample_pred,
                                regions=dict(task.regions), partial_labels=task.partial_labels)
    except MedsegError as exc:
        return _Outcome(task.case, {}, str(exc))
    return _Outcome(task.case, metrics, None, _write_viewer_data(task, pred, ref))


def _write_viewer_data(task: _Task, pred: Volume, ref: Volume) -> dict[str, Any] | None:
    """The case's viewer script (see :mod:`medseg.metrics.viewer_data`); None if it fails."""
    if task.viewer_script is None or task.out_dir is None:
        return None
    try:
        layers = viewer_data.CaseLayers(
            pred, ref, read_volume(task.image) if task.image else None,
            read_volume(task.uncertainty) if task.uncertainty else None, task.modality)
        data = viewer_data.case_data(layers)
        size = viewer_data.write_case_script(task.out_dir / task.viewer_script, task.case,
                                             data)
    except MedsegError as exc:
        log.warning("%s: no viewer data: %s", task.case, exc)
        return None
    return {"file": task.viewer_script, "grid": viewer_data.describe_grid(data), "bytes": size,
            "downsampled": data["downsampled"]}


def _write_report(
    out: Path,
    per_case: dict[str, CaseMetrics],
    names: dict[int | str, str],
    summary: dict[str, Any],
    pairs: CasePairs,
    worst: Sequence[str],
    images: Mapping[str, Path],
    progress: bool,
    viewer: Mapping[str, Mapping[str, Any]],
    scores: Mapping[str, Mapping[str, Any]],
) -> None:
    report.write_per_case_csv(out / "per_case.csv", per_case, names)
    report.write_summary(out / "summary.json", summary)
    plots = report.write_box_plots(out / "plots", per_case, names) if per_case else {}
    paths = {c: (p, r) for c, p, r in pairs.pairs}
    viewer_page.copy_assets(out)
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
    page = index_page.index_html(out, summary, plots, qc_paths, per_case, names, viewer,
                                 scores)
    write_text(out / "index.html", page)


def _write_qc(
    target: Path, case: str, pred_path: Path, ref_path: Path, image_path: Path | None,
    names: dict[int, str], metrics: CaseMetrics,
) -> None:
    image = read_volume(image_path) if image_path is not None else None
    fig = qc.qc_montage(read_volume(ref_path), read_volume(pred_path), names, metrics,
                        image=image, title=case)
    report.save_figure(fig, target)

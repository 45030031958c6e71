"""Evaluation: overlap and surface metrics, per-case and folder evaluation, reports, QC."""

from medseg.metrics.batch import FolderEvaluation, evaluate_folders
from medseg.metrics.evaluate import METRICS, class_metrics, evaluate_case, resample_labels
from medseg.metrics.labels import labels_from_dataset_json, parse_labels, parse_regions
from medseg.metrics.overlap import overlap_scores, volume_ml
from medseg.metrics.surface import surface_distances, surface_scores

__all__ = [
    "METRICS",
    "FolderEvaluation",
    "class_metrics",
    "evaluate_case",
    "evaluate_folders",
    "labels_from_dataset_json",
    "overlap_scores",
    "parse_labels",
    "parse_regions",
    "resample_labels",
    "surface_distances",
    "surface_scores",
    "volume_ml",
]

"""Preprocessing: fingerprint, plan, invertible per-case steps, on-disk cache, invert."""

from medseg.preprocess.cache import Cache, open_cache
from medseg.preprocess.case import PreprocessedCase, preprocess_case
from medseg.preprocess.fingerprint import Fingerprint, compute_fingerprint
from medseg.preprocess.invert import invert_labels, invert_probabilities
from medseg.preprocess.plan import Configuration, Plan
from medseg.preprocess.planning import plan_dataset
from medseg.preprocess.run import PreprocessSummary, plan_run, preprocess_dataset, preprocess_run

__all__ = [
    "Cache",
    "Configuration",
    "Fingerprint",
    "Plan",
    "PreprocessSummary",
    "PreprocessedCase",
    "compute_fingerprint",
    "invert_labels",
    "invert_probabilities",
    "open_cache",
    "plan_dataset",
    "plan_run",
    "preprocess_case",
    "preprocess_dataset",
    "preprocess_run",
]

"""Inference: sliding-window prediction, the fold-ensembling Predictor, batch prediction.

Notebook use::

    from medseg.inference import Predictor, predict_volume
    from medseg.io import read_volume, write_volume

    model = Predictor.load("runs/hippocampus")          # every trained fold, ensembled
    labels = predict_volume(model, read_volume("case.nii.gz"))  # same grid as the input
    write_volume(labels, "case_pred.nii.gz")

Batch prediction over files and DICOM folders lives in :mod:`medseg.inference.batch`
(``medseg predict``).
"""

from medseg.inference.postprocess import keep_largest_component, largest_component
from medseg.inference.predictor import (
    InferenceSettings,
    Prediction,
    Predictor,
    find_checkpoints,
    predict_volume,
)
from medseg.inference.sliding_window import (
    gaussian_weights,
    predict_probabilities,
    window_slices,
    window_starts,
)

__all__ = [
    "InferenceSettings",
    "Prediction",
    "Predictor",
    "find_checkpoints",
    "gaussian_weights",
    "keep_largest_component",
    "largest_component",
    "predict_probabilities",
    "predict_volume",
    "window_slices",
    "window_starts",
]

"""Map predictions on the preprocessed grid back onto the case's source grid by undoing the
recorded steps in reverse (resample, crop, reorientation; normalization needs no inverse)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from medseg.core import Volume, geometry
from medseg.core.errors import GeometryError
from medseg.preprocess.steps import resample_linear


def invert_probabilities(probs: np.ndarray, record: Mapping[str, Any]) -> np.ndarray:
    """``(K, X, Y, Z)`` class probabilities -> float32 ``(K, *source_shape)``.

    Resampling is undone with linear interpolation; voxels cropped away get background.
    This builds the whole volume at once (K full-resolution float32 maps); prediction uses
    the slab-by-slab :mod:`medseg.preprocess.invert_chunks`, which gives the same values.
    """
    _check_shape(probs, record)
    out = np.asarray(probs, dtype=np.float32)
    for step in reversed(record["steps"]):
        name = step["name"]
        if name == "resample" and not step.get("identity", False):
            out = resample_linear(out, step["shape_before"])
        elif name == "crop":
            out = _uncrop(out, step, background=np.eye(out.shape[0], 1, dtype=np.float32)[:, 0])
        elif name == "reorient":
            out = geometry.from_ras(out, np.asarray(step["orientation"]))
    return out


def invert_labels(labels: np.ndarray, record: Mapping[str, Any]) -> Volume:
    """Class indices ``(X, Y, Z)`` or ``(1, X, Y, Z)`` -> label-value Volume on the source grid.

    Without resampling the indices are moved exactly; with resampling each class is
    interpolated linearly as a one-hot mask and the arg-max is taken, slab by slab
    (:func:`medseg.preprocess.invert_chunks.invert_argmax`).
    """
    classes = np.asarray(labels)
    classes = classes[None] if classes.ndim == 3 else classes
    _check_shape(classes, record)
    values = np.asarray(record["label_values"])
    meta = {"case": record.get("case")}
    if _resampled(record):
        # imported here: torch (its interpolation) is not needed to plan or preprocess
        from medseg.preprocess.invert_chunks import invert_argmax

        onehot = np.stack([classes[0] == k for k in range(len(values))]).astype(np.float32)
        labels = invert_argmax(onehot, record)
        return Volume(labels[None], np.asarray(record["source_affine"]), meta)
    for step in reversed(record["steps"]):
        if step["name"] == "crop":
            classes = _uncrop(classes, step, background=np.zeros(1, dtype=classes.dtype))
        elif step["name"] == "reorient":
            classes = geometry.from_ras(classes, np.asarray(step["orientation"]))
    return Volume(values.astype(label_dtype(values))[classes],
                  np.asarray(record["source_affine"]), meta)


def label_dtype(values: np.ndarray) -> type:
    """uint8 when the label values fit, else int32."""
    return np.uint8 if values.min() >= 0 and values.max() <= 255 else np.int32


def _uncrop(array: np.ndarray, step: Mapping[str, Any], background: np.ndarray) -> np.ndarray:
    shape = (array.shape[0], *step["shape_before"])
    out = np.empty(shape, dtype=array.dtype)
    out[...] = background.reshape(-1, 1, 1, 1)
    window = (slice(None), *(slice(lo, hi) for lo, hi in step["bbox"]))
    out[window] = array
    return out


def _resampled(record: Mapping[str, Any]) -> bool:
    return any(s["name"] == "resample" and not s.get("identity", False) for s in record["steps"])


def _check_shape(array: np.ndarray, record: Mapping[str, Any]) -> None:
    if array.ndim != 4 or list(array.shape[1:]) != list(record["shape"]):
        raise GeometryError(
            f"prediction shape {list(array.shape)} does not match the preprocessed grid "
            f"{record['shape']} of case {record.get('case')}")

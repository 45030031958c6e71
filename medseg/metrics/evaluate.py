"""Per-case evaluation (:func:`evaluate_case`) and whole-folder evaluation with reports.

:func:`evaluate_case` returns ``{label value: {metric: value}}`` with the metrics of
:data:`METRICS`; conventions for empty masks are in :mod:`medseg.metrics.overlap` and
:mod:`medseg.metrics.surface`. Prediction and reference must share one voxel grid:
otherwise :class:`GeometryError`, unless ``resample_pred`` asks to resample the prediction
onto the reference grid (nearest neighbour).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from medseg.core import Volume
from medseg.core.errors import GeometryError, InputError
from medseg.metrics.overlap import overlap_scores, volume_ml
from medseg.metrics.surface import surface_scores

METRICS = (
    "dice", "iou", "precision", "recall", "hd95_mm", "assd_mm", "nsd",
    "pred_volume_ml", "ref_volume_ml",
)
DEFAULT_NSD_TOLERANCE_MM = 1.0

CaseMetrics = dict[int | str, dict[str, float]]  # label value (or region key) -> metrics


def evaluate_case(
    pred: Volume | np.ndarray,
    ref: Volume | np.ndarray,
    spacing: Sequence[float] | None = None,
    labels: Iterable[int] | None = None,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    resample_pred: bool = False,
    regions: Mapping[str, Sequence[int]] | None = None,
    partial_labels: bool = False,
) -> CaseMetrics:
    """Metrics of every label in ``labels`` (default: non-zero values in either input) and
    of every region (name -> label values, e.g. BraTS ``{"whole tumour": [1, 2, 3, 4]}``,
    keyed :func:`region_key`).

    ``pred`` and ``ref`` are label volumes or plain label arrays. With arrays, ``spacing``
    (mm per axis) is required; with volumes it is the reference's voxel size. With
    ``partial_labels`` a class (or region) absent from the reference is not annotated in
    this case: it is not scored (``scored`` 0, scores NaN, volumes kept).
    """
    if isinstance(pred, Volume) and isinstance(ref, Volume):
        pred_arr, ref_arr, spacing = _volumes_on_one_grid(pred, ref, spacing, resample_pred)
    elif isinstance(pred, Volume) or isinstance(ref, Volume):
        raise TypeError("pass two Volumes or two arrays, not one of each")
    else:
        pred_arr, ref_arr = label_array(pred, "prediction"), label_array(ref, "reference")
        if pred_arr.shape != ref_arr.shape:
            raise GeometryError(
                f"prediction shape {pred_arr.shape} differs from reference shape {ref_arr.shape}"
            )
        if spacing is None:
            raise ValueError("spacing (mm per axis) is required when passing plain arrays")
    if len(spacing) != ref_arr.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match {ref_arr.ndim}-D labels")
    values = present_labels(pred_arr, ref_arr) if labels is None else sorted(set(labels))
    targets: dict[int | str, tuple[int, ...]] = {int(v): (int(v),) for v in values}
    targets.update({region_key(r): tuple(int(v) for v in r) for r in (regions or {}).values()})
    out: CaseMetrics = {}
    for key, members in targets.items():
        p, r = np.isin(pred_arr, members), np.isin(ref_arr, members)
        metrics = class_metrics(p, r, spacing, nsd_tolerance_mm)
        out[key] = not_scored(metrics) if partial_labels and not r.any() else metrics
    return out


def region_key(values: Sequence[int]) -> str:
    """Key of a region in evaluation results: its label values joined by '+' (``1+2+4``)."""
    return "+".join(str(int(v)) for v in sorted(set(values)))


def not_scored(metrics: dict[str, float]) -> dict[str, float]:
    """A class not annotated in a case: no scores (NaN), volumes kept, ``scored`` 0."""
    return {**{k: (v if k.endswith("volume_ml") else math.nan) for k, v in metrics.items()},
            "scored": 0.0}


def class_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], nsd_tolerance_mm: float
) -> dict[str, float]:
    """All of :data:`METRICS` for one pair of boolean masks."""
    return {
        **overlap_scores(pred, ref),
        **surface_scores(pred, ref, spacing, nsd_tolerance_mm),
        "pred_volume_ml": volume_ml(pred, spacing),
        "ref_volume_ml": volume_ml(ref, spacing),
        "scored": 1.0,
    }


def present_labels(*arrays: np.ndarray) -> list[int]:
    """Sorted non-zero values occurring in any of ``arrays``."""
    values: set[int] = set()
    for arr in arrays:
        values.update(int(v) for v in np.unique(arr))
    return sorted(values - {0})


def label_array(data: Volume | np.ndarray, what: str) -> np.ndarray:
    """The integer spatial label array of a one-channel volume or a plain array."""
    if isinstance(data, Volume):
        if data.n_channels != 1:
            raise InputError(
                f"{what} has {data.n_channels} channels; a label volume has one",
                data.meta.get("source"),
            )
        arr = data.array[0]
    else:
        arr = np.asarray(data)
    if arr.dtype.kind in "iub":
        return arr
    if arr.dtype.kind == "f" and np.array_equal(arr, np.round(arr)):
        return arr.astype(np.int64)
    source = data.meta.get("source") if isinstance(data, Volume) else None
    raise InputError(f"{what} is not a label map (non-integer values, dtype {arr.dtype})", source)


def _volumes_on_one_grid(
    pred: Volume, ref: Volume, spacing: Sequence[float] | None, resample_pred: bool
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    if spacing is not None and not np.allclose(spacing, ref.spacing, atol=1e-6):
        raise ValueError(f"spacing {tuple(spacing)} contradicts the reference's {ref.spacing}")
    if not pred.same_grid(ref):
        if not resample_pred:
            raise GeometryError(
                f"prediction grid ({_describe_grid(pred)}) differs from the reference grid "
                f"({_describe_grid(ref)}); pass resample_pred=True (--resample-pred) to "
                "resample the prediction onto the reference grid",
                pred.meta.get("source"),
            )
        pred = resample_labels(pred, ref)
    return label_array(pred, "prediction"), label_array(ref, "reference"), ref.spacing


def _describe_grid(volume: Volume) -> str:
    spacing = "x".join(f"{s:.4g}" for s in volume.spacing)
    origin = ", ".join(f"{o:.4g}" for o in volume.origin)
    return (
        f"shape {volume.spatial_shape}, spacing {spacing} mm, origin ({origin}), "
        f"orientation {''.join(volume.axcodes)}"
    )


def resample_labels(labels: Volume, target: Volume) -> Volume:
    """``labels`` resampled onto ``target``'s grid by nearest neighbour (0 outside)."""
    arr = resample_onto(label_array(labels, "prediction"), labels.affine, target, order=0)
    return Volume.from_spatial(arr, target.affine, {**labels.meta, "resampled_to": "reference"})


def resample_onto(
    array: np.ndarray, affine: np.ndarray, target: Volume, order: int = 0
) -> np.ndarray:
    """A 3D ``array`` with voxel-to-world ``affine`` sampled on ``target``'s grid.

    ``order`` 0 is nearest neighbour (labels), 1 trilinear (images); 0 outside the source.
    """
    target_to_source = np.linalg.inv(affine) @ target.affine
    return ndimage.affine_transform(
        array, target_to_source[:3, :3], offset=target_to_source[:3, 3],
        output_shape=target.spatial_shape, order=order, mode="constant", cval=0,
    )


def with_all_labels(metrics: CaseMetrics, labels: Iterable[int | str],
                    partial_labels: bool = False) -> CaseMetrics:
    """``metrics`` completed with the both-empty results of labels absent from the case
    (labels first, in order, then regions); with ``partial_labels`` such a label is not
    annotated in the case and is not scored, as in :func:`evaluate_case`."""
    nothing = np.zeros(1, dtype=bool)
    empty = class_metrics(nothing, nothing, (1.0,), DEFAULT_NSD_TOLERANCE_MM)
    if partial_labels:
        empty = not_scored(empty)
    return {v: dict(metrics.get(v, empty)) for v in sorted(labels, key=_key_order)}


def _key_order(key: int | str) -> tuple[int, int | str]:
    return (1, key) if isinstance(key, str) else (0, key)

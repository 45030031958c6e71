"""``preprocess_case``: apply a plan to one case (training and prediction share it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medseg.core import Volume, geometry
from medseg.core.errors import DatasetError, GeometryError
from medseg.preprocess.plan import Plan
from medseg.preprocess.steps import (
    Grid,
    crop_to_nonzero,
    labels_to_classes,
    normalize,
    reorient,
    resample,
)


@dataclass(frozen=True)
class PreprocessedCase:
    """Image float32 ``(C, X, Y, Z)``, label uint8 class indices ``(1, X, Y, Z)`` or None,
    and the JSON record of every step (input of ``invert``)."""

    image: np.ndarray
    label: np.ndarray | None
    record: dict[str, Any]


def preprocess_case(image: Volume, label: Volume | None, plan: Plan) -> PreprocessedCase:
    """Reorient to RAS, crop to non-zero, normalize, resample to the plan's spacing.

    ``label`` (label values, on the image grid) is optional: prediction passes None.
    """
    if image.n_channels != plan.n_channels:
        raise GeometryError(f"image has {image.n_channels} channel(s), the plan expects "
                            f"{plan.n_channels}", image.meta.get("source"))
    classes = None
    if label is not None:
        if not image.same_grid(label):
            raise GeometryError("label is not on the image grid", label.meta.get("source"))
        try:
            classes = labels_to_classes(label.array, plan.label_values)
        except DatasetError as exc:
            raise DatasetError(str(exc), label.meta.get("source")) from None
    grid = Grid(image.array, classes, image.affine)
    steps = []
    grid, rec = reorient(grid)
    steps.append(rec)
    if plan.crop_to_nonzero:
        grid, rec = crop_to_nonzero(grid)
        steps.append(rec)
    normalized, rec = normalize(grid.image, plan.normalization)
    steps.append(rec)
    grid, rec = resample(Grid(normalized, grid.label, grid.affine), plan.target_spacing,
                         plan.image_interpolation, plan.label_interpolation)
    steps.append(rec)
    record = {
        "case": image.meta.get("case"),
        "source": image.meta.get("source"),
        "source_shape": list(image.spatial_shape),
        "source_affine": image.affine.tolist(),
        "label_values": list(plan.label_values),
        "steps": steps,
        "shape": list(grid.image.shape[1:]),
        "spacing": list(geometry.spacing(grid.affine)),
        "affine": grid.affine.tolist(),
    }
    if image.meta.get("regularized"):  # the source grid is a regularised DICOM series
        record["source_regularized"] = image.meta["regularized"]
    label_out = None if grid.label is None else np.ascontiguousarray(grid.label, dtype=np.uint8)
    return PreprocessedCase(np.ascontiguousarray(grid.image, dtype=np.float32), label_out, record)

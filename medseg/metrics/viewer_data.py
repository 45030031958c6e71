"""Per-case data of the report's slice viewer.

A case's layers (image, prediction, reference, uncertainty) are sampled onto one grid:
the reference's (the prediction's when there is none) in RAS array order
(:meth:`Volume.to_ras`, an exact permutation), downsampled when it is larger than
:data:`MAX_EDGE` voxels along an axis or :data:`MAX_VOXELS` in all (voxel edges stay
aligned; labels by nearest neighbour, image and uncertainty linearly). Each layer is
packed as gzip + base64 in one small JavaScript file per case, ``viewer/cases/<n>.js``,
which calls ``medsegViewer.addCase(key, data)``: a page opened from disk (``file://``) may
load scripts but not fetch files, so this is how the data reaches the viewer offline.

Image intensities keep their units: integer images (CT in HU) exactly when their range
fits 16 bits, other images quantised to 65536 levels between their minimum and maximum.
16-bit layers are stored as their high bytes then their low bytes (gzip compresses that
better). The uncertainty map is quantised to 256 levels of [0, 1].
"""

from __future__ import annotations

import base64
import gzip
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core import Volume
from medseg.core.atomic import write_text
from medseg.metrics.evaluate import label_array
from medseg.metrics.qc import central_slices, on_grid

MAX_VOXELS = 2**21  # 128³: a ct_headneck case whole; a 512×512×134 CT becomes 158×158×83
MAX_EDGE = 256
CT_MIN_HU = -500.0  # an integer image going below this is taken for CT (HU)


@dataclass(frozen=True)
class CaseLayers:
    """What the viewer shows of one case (prediction and image on any grid)."""

    prediction: Volume
    reference: Volume | None = None
    image: Volume | None = None
    uncertainty: Volume | None = None
    modality: str | None = None  # "CT", "MRI", ...; guessed from the image when None


def viewer_shape(
    shape: tuple[int, ...], max_voxels: int = MAX_VOXELS, max_edge: int = MAX_EDGE
) -> tuple[int, int, int]:
    """The viewer grid's shape for a grid of ``shape``: at most ``max_edge`` per axis and
    ``max_voxels`` in all, shrinking every axis by the same factor once the edge cap holds."""
    sizes = np.asarray(shape, dtype=np.float64)
    sizes = sizes * np.minimum(1.0, max_edge / sizes)
    total = float(np.prod(sizes))
    if total > max_voxels:
        sizes *= (max_voxels / total) ** (1.0 / 3.0)
    out = np.maximum(1, np.floor(sizes + 1e-9)).astype(int)
    return int(out[0]), int(out[1]), int(out[2])


def viewer_grid(grid: Volume, max_voxels: int = MAX_VOXELS, max_edge: int = MAX_EDGE) -> Volume:
    """An (empty, uint8) volume on the viewer grid of ``grid``: RAS order, downsampled
    with the physical extent kept (voxel edges aligned)."""
    ras = grid.to_ras()
    shape = np.asarray(ras.spatial_shape)
    target = np.asarray(viewer_shape(tuple(shape), max_voxels, max_edge))
    factor = shape / target
    scale = np.eye(4)
    scale[:3, :3] = np.diag(factor)
    scale[:3, 3] = (factor - 1.0) / 2.0
    return Volume(np.zeros((1, *target), dtype=np.uint8), ras.affine @ scale,
                  {"downsampled": bool((target != shape).any())})


def case_data(layers: CaseLayers, **limits: int) -> dict[str, Any]:
    """The JSON-ready viewer data of a case (``limits``: ``max_voxels``, ``max_edge``)."""
    base = layers.reference if layers.reference is not None else layers.prediction
    grid = viewer_grid(base, **limits)
    pred = label_array(layers.prediction, "prediction")
    pred = on_grid(layers.prediction.with_array(pred[None]), grid, 0)
    data: dict[str, Any] = {
        "shape": list(grid.spatial_shape),
        "spacing": [round(s, 6) for s in grid.spacing],
        "source_shape": list(base.spatial_shape),
        "source_spacing": [round(s, 6) for s in base.spacing],
        "downsampled": grid.meta["downsampled"],
        "layers": {"prediction": encode_labels(pred)},
    }
    union = pred > 0
    if layers.reference is not None:
        ref = on_grid(layers.reference.with_array(
            label_array(layers.reference, "reference")[None]), grid, 0)
        data["layers"]["reference"] = encode_labels(ref)
        union |= ref > 0
    data["focus"] = list(central_slices(union))
    data["labels_present"] = sorted(int(v) for v in np.unique(np.where(union, pred, 0)) if v)
    if layers.reference is not None:
        data["labels_present"] = sorted(set(data["labels_present"])
                                        | {int(v) for v in np.unique(ref) if v})
    if layers.image is not None:
        image = on_grid(layers.image, grid, 1)
        data["layers"]["image"] = encode_image(image)
        modality = layers.modality or guess_modality(layers.image)
        data["modality"] = "CT" if modality and modality.upper() == "CT" else modality
        data["auto_window"] = _percentile_window(image)
    if layers.uncertainty is not None:
        unc = np.clip(on_grid(layers.uncertainty, grid, 1), 0.0, 1.0)
        data["layers"]["uncertainty"] = _encoded(np.round(unc * 255).astype(np.uint8),
                                                 scale=1 / 255)
    return data


def guess_modality(image: Volume) -> str | None:
    """"CT" for integer intensities reaching below :data:`CT_MIN_HU` (air in HU)."""
    arr = image.array[0]
    if arr.dtype.kind in "iu" or (arr.dtype.kind == "f" and np.array_equal(arr, np.round(arr))):
        return "CT" if float(arr.min()) <= CT_MIN_HU else None
    return None


def _percentile_window(image: np.ndarray) -> list[float]:
    lo, hi = (float(v) for v in np.percentile(image, [1.0, 99.0]))
    return [lo, hi if hi > lo else lo + 1.0]


def encode_labels(labels: np.ndarray) -> dict[str, Any]:
    """Label values as uint8 (uint16 when larger; negative values are not labels)."""
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 65535:
        raise ValueError("label values must lie in 0..65535")
    dtype = np.uint8 if labels.max(initial=0) <= 255 else np.uint16
    return _encoded(labels.astype(dtype))


def encode_image(image: np.ndarray) -> dict[str, Any]:
    """Intensities as uint16 with ``value = offset + scale * stored`` (see module docs)."""
    finite = image[np.isfinite(image)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    integral = bool(np.array_equal(finite, np.round(finite)))
    scale = 1.0 if integral and hi - lo <= 65535 else max(hi - lo, 1e-12) / 65535
    stored = np.round((np.nan_to_num(image, nan=lo) - lo) / scale)
    return _encoded(np.clip(stored, 0, 65535).astype(np.uint16), scale=scale, offset=lo)


def _encoded(array: np.ndarray, scale: float = 1.0, offset: float = 0.0) -> dict[str, Any]:
    raw = np.ascontiguousarray(array)
    if raw.dtype == np.uint16:  # high bytes, then low bytes
        pairs = raw.astype("<u2").view(np.uint8).reshape(-1, 2)
        payload = pairs[:, 1].tobytes() + pairs[:, 0].tobytes()
    else:
        payload = raw.tobytes()
    packed = gzip.compress(payload, compresslevel=6, mtime=0)
    return {"dtype": raw.dtype.name, "scale": scale, "offset": offset,
            "data": base64.b64encode(packed).decode("ascii")}


def write_case_script(path: Path, key: str, data: dict[str, Any]) -> int:
    """Write the case's viewer script; returns its size in bytes."""
    text = f"medsegViewer.addCase({json.dumps(key)}, {json.dumps(data, allow_nan=False)});\n"
    write_text(path, text)
    return len(text)


def describe_grid(data: dict[str, Any]) -> str:
    """E.g. ``512×512×300 → 161×161×94 voxels (downsampled for the viewer)``."""
    shape = "×".join(str(s) for s in data["source_shape"])
    if not data["downsampled"]:
        return f"{shape} voxels"
    return f"{shape} → {'×'.join(str(s) for s in data['shape'])} voxels (downsampled)"


def mebibytes(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.1f} MiB" if n_bytes >= 2**20 else f"{math.ceil(n_bytes / 1024)} KiB"

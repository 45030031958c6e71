"""nnU-Net v2's inference preprocessing and its inverse, reproduced on medseg Volumes.

Order (as nnU-Net's DefaultPreprocessor): medseg ``(i, j, k)`` -> nnU-Net ``(z, y, x)`` ->
``transpose_forward`` -> crop to the hole-filled non-zero mask -> normalise per channel
(on the cropped, native grid) -> resample to the target spacing (spline order 3, a
low-resolution axis separately by nearest neighbour). Back: logits resampled with order 1
(low-resolution axis nearest), softmax (sigmoid for regions), arg-max (region order),
un-crop, ``transpose_backward``, axes reversed -- streamed a few output planes at a time
so that no full-resolution probability volume exists unless asked for.

Resizing follows scikit-image's ``resize(mode="edge", anti_aliasing=False)`` that nnU-Net
calls: voxel edges aligned, edge values extended, the result clipped to the input range.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from medseg.core import Volume, geometry
from medseg.core.errors import GeometryError
from medseg.preprocess.case import PreprocessedCase
from medseg.preprocess.nnunet_plans import ANISOTROPY_THRESHOLD, NnunetPlan, Resampling
from medseg.preprocess.steps import nonzero_bbox

#: Output planes resampled at once when mapping logits back (bounds the temporaries).
PLANES_PER_CHUNK = 8


# --- axes ------------------------------------------------------------------------------------


def to_nnunet_axes(volume: Volume, plan: NnunetPlan) -> tuple[np.ndarray, list[float], Any]:
    """``(C, *nnU-Net axes)`` array (a view), its spacing, and the reorientation applied
    (only for nnU-Net's ``NibabelIOWithReorient`` reader, else None)."""
    array, affine, orientation = volume.array, volume.affine, None
    if plan.reader == "NibabelIOWithReorient":
        array, affine, orientation = geometry.to_ras(array, affine)
    spacing = list(geometry.spacing(affine))[::-1]
    order = [2 - a for a in plan.transpose_forward]  # (z, y, x) then transpose_forward
    return array.transpose(0, *(a + 1 for a in order)), [spacing[a] for a in
                                                         plan.transpose_forward], orientation


def from_nnunet_axes(array: np.ndarray, plan: NnunetPlan, orientation: Any) -> np.ndarray:
    """Inverse of :func:`to_nnunet_axes` for a ``(C, ...)`` array."""
    order = [2 - a for a in plan.transpose_forward]
    back = np.argsort(order)
    out = array.transpose(0, *(int(a) + 1 for a in back))
    return out if orientation is None else geometry.from_ras(out, orientation)


# --- preprocessing ---------------------------------------------------------------------------


def preprocess_nnunet(volume: Volume, plan: NnunetPlan) -> PreprocessedCase:
    """nnU-Net's preprocessing of one image; the record holds what the inverse needs."""
    if volume.n_channels != len(plan.channels):
        raise GeometryError(f"image has {volume.n_channels} channel(s), the nnU-Net model "
                            f"expects {len(plan.channels)}", volume.meta.get("source"))
    data, spacing, orientation = to_nnunet_axes(volume, plan)
    mask = ndimage.binary_fill_holes(np.any(data != 0, axis=0))
    bbox = nonzero_bbox(mask[None])  # nnU-Net crops nothing from an all-zero image
    window = tuple(slice(lo, hi) for lo, hi in bbox)
    cropped = data[(slice(None), *window)].astype(np.float32)  # a copy: inputs stay intact
    mask = mask[window]
    target = list(plan.spacing) if not plan.is_2d else [spacing[0], *plan.spacing]
    new_shape = [round(s / t * n) for s, t, n in zip(spacing, target, cropped.shape[1:],
                                                      strict=True)]
    for c in range(cropped.shape[0]):
        normalize_channel(cropped[c], mask, plan, c)
    image = resample(cropped, new_shape, spacing, target, plan.resample_data)
    record = {
        "format": "nnunet", "case": volume.meta.get("case"), "source": volume.meta.get("source"),
        "source_shape": list(volume.spatial_shape), "source_affine": volume.affine.tolist(),
        "orientation": None if orientation is None else orientation.tolist(),
        "shape_before_cropping": list(data.shape[1:]), "bbox": bbox,
        "shape_after_cropping": list(cropped.shape[1:]), "spacing": spacing,
        "target_spacing": target, "shape": list(image.shape[1:]),
    }
    return PreprocessedCase(np.ascontiguousarray(image, dtype=np.float32), None, record)


def normalize_channel(x: np.ndarray, mask: np.ndarray, plan: NnunetPlan, c: int) -> None:
    """Normalise channel ``c`` in place with the plan's scheme (float32 arithmetic)."""
    scheme = plan.normalization[c]
    if scheme == "ZScoreNormalization":
        if plan.use_mask_for_norm[c]:
            values = x[mask]
            mean, std = values.mean(), values.std()
            x[mask] = (values - mean) / max(std, 1e-8)
        else:
            mean, std = x.mean(), x.std()
            x -= mean
            x /= max(std, 1e-8)
    elif scheme == "CTNormalization":
        props = plan.intensity_properties[c]
        np.clip(x, props["percentile_00_5"], props["percentile_99_5"], out=x)
        x -= props["mean"]
        x /= max(props["std"], 1e-8)
    elif scheme == "RescaleTo01Normalization":
        x -= x.min()
        x /= max(x.max(), 1e-8)
    elif scheme == "RGBTo01Normalization":
        x /= 255.0


# --- resampling ------------------------------------------------------------------------------


def separate_axis(current: Sequence[float], target: Sequence[float],
                  setting: Resampling) -> int | None:
    """The low-resolution axis resampled on its own (nnU-Net's rule), or None."""
    if setting.force_separate_z is False:
        return None
    if setting.force_separate_z or max(current) / min(current) > ANISOTROPY_THRESHOLD:
        axes = _lowres_axes(current)
    elif max(target) / min(target) > ANISOTROPY_THRESHOLD:
        axes = _lowres_axes(target)
    else:
        return None
    return axes[0] if len(axes) == 1 else None


def _lowres_axes(spacing: Sequence[float]) -> list[int]:
    s = np.asarray(spacing, dtype=np.float64)
    return [int(a) for a in np.flatnonzero(s.max() / s == 1)]


def resample(data: np.ndarray, new_shape: Sequence[int], current: Sequence[float],
             target: Sequence[float], setting: Resampling) -> np.ndarray:
    """Resample ``(C, ...)`` images to ``new_shape`` as nnU-Net's
    ``resample_data_or_seg_to_shape`` does (float32 out; unchanged when the shape is)."""
    if tuple(data.shape[1:]) == tuple(new_shape):
        return data
    axis = separate_axis(current, target, setting)
    out = np.empty((data.shape[0], *new_shape), dtype=np.float32)
    for c in range(data.shape[0]):
        x = data[c].astype(np.float64)
        if axis is None:
            out[c] = resize(x, new_shape, setting.order)
            continue
        in_plane = list(new_shape)
        in_plane[axis] = x.shape[axis]
        planes = np.stack([resize(np.take(x, i, axis), _drop(in_plane, axis), setting.order)
                           for i in range(x.shape[axis])], axis=axis)
        out[c] = resample_axis(planes, axis, new_shape[axis], setting.order_z)
    return out


def resize(x: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """scikit-image ``resize(x, shape, order, mode="edge", anti_aliasing=False)``."""
    zoom = [n / s for n, s in zip(shape, x.shape, strict=True)]
    out = ndimage.zoom(x, zoom, order=order, mode="nearest", grid_mode=True)
    if order > 1:
        np.clip(out, x.min(), x.max(), out=out)
    return out


def resample_axis(x: np.ndarray, axis: int, size: int, order: int) -> np.ndarray:
    """Resample one axis to ``size`` (nearest, or linear when ``order`` is 1)."""
    n = x.shape[axis]
    if n == size:
        return x
    coords = (np.arange(size) + 0.5) * (n / size) - 0.5
    if order == 0:
        return np.take(x, nearest_indices(n, size), axis)
    lo = np.clip(np.floor(coords), 0, n - 1).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = np.clip(coords - lo, 0, 1).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return np.take(x, lo, axis) * (1 - w) + np.take(x, hi, axis) * w


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output position along an axis (ndimage order 0, edges aligned)."""
    coords = (np.arange(n_out) + 0.5) * (float(n_in) / n_out) - 0.5
    return np.clip(np.floor(coords + 0.5), 0, n_in - 1).astype(np.int64)


def _drop(values: Sequence[int], axis: int) -> list[int]:
    return [v for a, v in enumerate(values) if a != axis]


# --- back to the source grid -----------------------------------------------------------------


def logits_to_source(
    logits: torch.Tensor, record: dict[str, Any], plan: NnunetPlan, with_probabilities: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Label map (label values, medseg axes) and, if asked for, probabilities ``(K, ...)`` on
    the source grid from logits ``(K, *preprocessed shape)`` (nnU-Net's export)."""
    crop_shape = record["shape_after_cropping"]
    full_shape = record["shape_before_cropping"]
    setting = plan.resample_probabilities
    current = plan.spacing if not plan.is_2d else [record["spacing"][0], *plan.spacing]
    axis = separate_axis(current, record["spacing"], setting)
    chunk_axis = 0 if axis is None else axis
    labels = np.zeros(full_shape, dtype=np.uint8 if max(plan.labels.values) < 255 else np.uint16)
    probs = None
    if with_probabilities:
        probs = np.zeros((logits.shape[0], *full_shape), dtype=np.float32)
        if not plan.labels.has_regions:
            probs[0] = 1.0  # outside the crop: background
    window = tuple(slice(lo, hi) for lo, hi in record["bbox"])
    for start in range(0, crop_shape[chunk_axis], PLANES_PER_CHUNK):
        stop = min(start + PLANES_PER_CHUNK, crop_shape[chunk_axis])
        part = _resampled_planes(logits, crop_shape, chunk_axis, start, stop,
                                 setting.order_z if axis is not None else 1)
        p = _activation(part, plan)
        target = list(window)
        lo = record["bbox"][chunk_axis][0]
        target[chunk_axis] = slice(lo + start, lo + stop)
        labels[tuple(target)] = _segment(part, p, plan)
        if probs is not None:
            probs[(slice(None), *target)] = p.numpy()
    orientation = record.get("orientation")
    orientation = None if orientation is None else np.asarray(orientation)
    labels = from_nnunet_axes(labels[None], plan, orientation)[0]
    if probs is not None:
        probs = from_nnunet_axes(probs, plan, orientation)
    return labels, probs


def _resampled_planes(logits: torch.Tensor, shape: Sequence[int], axis: int, start: int,
                      stop: int, order_axis: int) -> torch.Tensor:
    """Output planes ``start:stop`` along ``axis`` of the logits resampled to ``shape``:
    that axis by nearest (``order_axis`` 0) or linear interpolation, then the other two
    bilinearly (as one trilinear resize when linear: the interpolation is separable)."""
    n_in, size = logits.shape[1 + axis], shape[axis]
    out_idx = np.arange(start, stop)
    if n_in == size:
        planes = logits.index_select(1 + axis, torch.from_numpy(out_idx))
    elif order_axis == 0:
        src = torch.from_numpy(nearest_indices(n_in, size)[out_idx])
        planes = logits.index_select(1 + axis, src)
    else:
        coords = (out_idx + 0.5) * (n_in / size) - 0.5
        lo = np.clip(np.floor(coords), 0, n_in - 1).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        w = torch.from_numpy(np.clip(coords - lo, 0, 1).astype(np.float32))
        w = w.reshape([-1 if a == axis else 1 for a in range(3)])
        planes = (logits.index_select(1 + axis, torch.from_numpy(lo)).float() * (1 - w)
                  + logits.index_select(1 + axis, torch.from_numpy(hi)).float() * w)
    planes = planes.float().movedim(1 + axis, 0)  # (planes, K, a, b)
    in_plane = _drop(list(shape), axis)
    if list(planes.shape[2:]) != in_plane:
        planes = torch.nn.functional.interpolate(planes, size=in_plane, mode="bilinear",
                                                 align_corners=False)
    if n_in != size or list(logits.shape[1:]) != list(shape):
        planes = planes.half().float()  # nnU-Net keeps resampled logits in their float16
    return planes.movedim(0, 1 + axis)  # (K, ... planes along axis ...)


def _activation(logits: torch.Tensor, plan: NnunetPlan) -> torch.Tensor:
    if plan.labels.has_regions:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=0)


def _segment(logits: torch.Tensor, probs: torch.Tensor, plan: NnunetPlan) -> np.ndarray:
    """Label values: arg-max of the classes, or regions painted in ``regions_class_order``."""
    if not plan.labels.has_regions:
        values = np.asarray(sorted(plan.labels.values), dtype=np.int64)
        return values[logits.argmax(0).numpy()]
    seg = torch.zeros(probs.shape[1:], dtype=torch.int64)
    for i, value in enumerate(plan.labels.regions_class_order):
        seg[probs[i] > 0.5] = value
    return seg.numpy()

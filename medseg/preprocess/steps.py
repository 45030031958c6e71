"""Invertible preprocessing steps. The spatial steps take a :class:`Grid` ``(image, label,
affine)`` and return the transformed grid plus a JSON record of their parameters (see
``invert.py`` for the inverse); ``normalize`` acts on the image alone.

Arrays are channel-first: image float32 ``(C, X, Y, Z)``, label uint8 class indices
``(1, X, Y, Z)`` or None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from medseg.core import geometry
from medseg.core.errors import ConfigError, DatasetError

Record = dict[str, Any]
INTERPOLATION_ORDER = {"nearest": 0, "linear": 1, "cubic": 3}
ANISOTROPY_RATIO = 3.0  # as nnU-Net: beyond this spacing ratio an axis is resampled apart


class Grid(NamedTuple):
    """The state threaded through the steps."""

    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray


def reorient(grid: Grid) -> tuple[Grid, Record]:
    """Permute/flip axes to the closest RAS order (no interpolation)."""
    image, affine, orientation = geometry.to_ras(grid.image, grid.affine)
    label = None if grid.label is None else geometry.reorient_array(grid.label, orientation)
    record = {"name": "reorient", "orientation": orientation.tolist(),
              "shape_before": list(grid.image.shape[1:])}
    return Grid(image, label, affine), record


def nonzero_bbox(image: np.ndarray) -> list[list[int]]:
    """``[[lo, hi), ...]`` per spatial axis of the voxels non-zero in any channel (the whole
    grid if the image is all zero)."""
    mask = np.any(image != 0, axis=0)
    bbox = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        bbox.append([int(hits[0]), int(hits[-1]) + 1] if hits.size else [0, mask.shape[axis]])
    return bbox


def crop_to_nonzero(grid: Grid) -> tuple[Grid, Record]:
    """Crop to the bounding box of non-zero image voxels; the affine follows the crop."""
    bbox = nonzero_bbox(grid.image)
    window = (slice(None), *(slice(lo, hi) for lo, hi in bbox))
    shift = np.eye(4)
    shift[:3, 3] = [lo for lo, _ in bbox]
    label = None if grid.label is None else grid.label[window]
    record = {"name": "crop", "bbox": bbox, "shape_before": list(grid.image.shape[1:])}
    return Grid(grid.image[window], label, grid.affine @ shift), record


def target_shape(shape: Sequence[int], spacing: Sequence[float],
                 target: Sequence[float]) -> tuple[int, ...]:
    """Shape covering the same extent at ``target`` spacing."""
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target, strict=True))


def resample(
    grid: Grid, target_spacing: Sequence[float], image_interpolation: str = "cubic",
    label_interpolation: str = "nearest",
) -> tuple[Grid, Record]:
    """Resample to ``target_spacing``, keeping the physical extent (voxel edges aligned, as
    ``align_corners=False``).

    Skipped, with an identity record, when the shape would not change. As in nnU-Net, an
    anisotropic axis (spacing > 3x the finest, before or after) is interpolated with
    nearest neighbour, the other axes with the requested interpolation.
    """
    shape = grid.image.shape[1:]
    spacing = geometry.spacing(grid.affine)
    new_shape = target_shape(shape, spacing, target_spacing)
    record: Record = {"name": "resample", "shape_before": list(shape),
                      "spacing_before": list(spacing)}
    if new_shape == tuple(shape):
        return grid, {**record, "shape_after": list(shape), "spacing_after": list(spacing),
                      "identity": True}
    separate = anisotropic_axis(spacing)
    if separate is None:
        separate = anisotropic_axis(target_spacing)
    image = resample_array(grid.image, new_shape, _order(image_interpolation), separate)
    label = None
    if grid.label is not None:
        label = resample_labels(grid.label, new_shape, label_interpolation, separate)
    affine = grid.affine @ resampling_matrix(shape, new_shape)
    record.update(shape_after=list(new_shape), spacing_after=list(geometry.spacing(affine)),
                  identity=False, image_interpolation=image_interpolation,
                  label_interpolation=label_interpolation, separate_axis=separate)
    return Grid(image, label, affine), record


def anisotropic_axis(spacing: Sequence[float], ratio: float = ANISOTROPY_RATIO) -> int | None:
    """The axis whose spacing exceeds ``ratio`` times the finest one, if any."""
    s = np.asarray(spacing, dtype=np.float64)
    axis = int(np.argmax(s))
    return axis if s[axis] > ratio * s.min() else None


def resampling_matrix(shape_in: Sequence[int], shape_out: Sequence[int]) -> np.ndarray:
    """4x4 map from output voxel indices to input voxel indices (voxel edges aligned)."""
    scale = np.asarray(shape_in, dtype=np.float64) / np.asarray(shape_out, dtype=np.float64)
    m = np.diag([*scale, 1.0])
    m[:3, 3] = 0.5 * scale - 0.5
    return m


def resample_array(array: np.ndarray, shape_out: Sequence[int], order: int,
                   separate_axis: int | None = None) -> np.ndarray:
    """Resample every channel of an array onto ``shape_out`` as float32 (edges extended).

    With ``separate_axis``, that axis is resampled in a second pass by nearest neighbour
    (the mapping is separable, so the two passes equal one).
    """
    if separate_axis is not None and order > 0:
        in_plane = list(shape_out)
        in_plane[separate_axis] = array.shape[1 + separate_axis]
        planes = _resample_planes(array, in_plane, order, separate_axis)
        return resample_array(planes, shape_out, 0)
    from scipy import ndimage  # imported when used: `medseg plan/preprocess` start fast

    m = resampling_matrix(array.shape[1:], shape_out)
    out = np.empty((array.shape[0], *shape_out), dtype=np.float32)
    for c in range(array.shape[0]):
        ndimage.affine_transform(
            array[c].astype(np.float32, copy=False), np.diag(m)[:3], offset=m[:3, 3],
            output_shape=tuple(shape_out), output=out[c], order=order, mode="nearest",
        )
    return out


def _resample_planes(array: np.ndarray, shape_out: Sequence[int], order: int,
                     axis: int) -> np.ndarray:
    """The in-plane pass of :func:`resample_array`: each plane across ``axis`` (whose size
    does not change) resampled in 2D. Equal to the 3D transform (identity along ``axis``:
    a spline reproduces its samples) to float32 rounding, but scipy's float64 spline
    coefficients cover one plane, not the whole volume (8 bytes per source voxel: the
    largest allocation of preprocessing a full-size CT)."""
    from scipy import ndimage

    m = resampling_matrix(array.shape[1:], shape_out)
    keep = [a for a in range(3) if a != axis]
    matrix, offset = np.diag(m)[:3][keep], m[:3, 3][keep]
    plane_shape = tuple(int(shape_out[a]) for a in keep)
    out = np.empty((array.shape[0], *shape_out), dtype=np.float32)
    for c in range(array.shape[0]):
        for k in range(array.shape[1 + axis]):
            index = [slice(None)] * 3
            index[axis] = k
            source = array[c][tuple(index)].astype(np.float32, copy=False)
            ndimage.affine_transform(source, matrix, offset=offset, output_shape=plane_shape,
                                     output=out[c][tuple(index)], order=order, mode="nearest")
    return out


def resample_linear(array: np.ndarray, shape_out: Sequence[int]) -> np.ndarray:
    """Trilinear resampling of every channel onto ``shape_out``: the mapping of
    ``resample_array(array, shape_out, 1)`` (equal to ~1e-6), ~4x faster via torch."""
    import torch  # imported when used: `medseg plan/preprocess` need no torch otherwise

    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    out = torch.nn.functional.interpolate(tensor, size=tuple(shape_out), mode="trilinear",
                                          align_corners=False)
    return out[0].numpy()


def resample_labels(label: np.ndarray, shape_out: Sequence[int], mode: str,
                    separate_axis: int | None = None) -> np.ndarray:
    """Resample class indices: ``nearest`` neighbour or ``linear`` on one-hot masks + argmax."""
    if mode == "nearest":
        return resample_array(label, shape_out, 0).astype(np.uint8)
    if mode != "linear":
        raise ConfigError(f"label_interpolation must be 'nearest' or 'linear', got {mode!r}")
    n_classes = int(label.max()) + 1
    onehot = np.stack([label[0] == k for k in range(n_classes)]).astype(np.float32)
    resampled = resample_array(onehot, shape_out, 1, separate_axis)
    return resampled.argmax(axis=0)[None].astype(np.uint8)


def normalize(image: np.ndarray, schemes: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, Record]:
    """Normalize each channel by its scheme; returns float32 and the per-channel record."""
    if len(schemes) != image.shape[0]:
        raise ConfigError(f"plan has {len(schemes)} normalization entries for "
                          f"{image.shape[0]} image channel(s)")
    out = np.empty(image.shape, dtype=np.float32)
    records = [normalize_channel(image[c], schemes[c], out[c]) for c in range(image.shape[0])]
    return out, {"name": "normalize", "channels": records}


def normalize_channel(x: np.ndarray, scheme: Mapping[str, Any], out: np.ndarray) -> Record:
    """Write the normalized channel into ``out``; return its parameters."""
    name = scheme.get("scheme")
    if name == "zscore_nonzero":
        mask = x != 0
        values = x[mask] if mask.any() else x.ravel()
        mean, std = float(values.mean(dtype=np.float64)), float(values.std(dtype=np.float64))
        np.subtract(x, mean, out=out, dtype=np.float32, casting="unsafe")
        out /= max(std, 1e-8)
        out[~mask] = 0
        return {"scheme": name, "mean": mean, "std": std}
    if name == "ct":
        lo, hi = scheme["clip"]
        np.clip(x, lo, hi, out=out, casting="unsafe")
        out -= scheme["mean"]
        out /= max(float(scheme["std"]), 1e-8)
        return {"scheme": name, "clip": [lo, hi], "mean": scheme["mean"], "std": scheme["std"]}
    if name == "none":
        out[...] = x
        return {"scheme": name}
    raise ConfigError(f"unknown normalization scheme {name!r} (zscore_nonzero, ct, none)")


def labels_to_classes(label: np.ndarray, label_values: Sequence[int]) -> np.ndarray:
    """Map label values to class indices ``0..K-1``; undeclared values raise DatasetError."""
    values = np.asarray(sorted(label_values), dtype=np.int64)
    if label.dtype.kind in "ui" and label.size:
        lo, hi = int(label.min()), int(label.max())
        if np.array_equal(values, np.arange(len(values))) and lo >= 0 and hi < len(values):
            return label.astype(np.uint8)  # values are already the class indices
    lab = label.astype(np.int64)
    idx = np.searchsorted(values, lab).clip(0, len(values) - 1)
    if not np.array_equal(values[idx], lab) or (label.dtype.kind == "f"
                                                 and not np.array_equal(lab, label)):
        found = {int(v) if float(v).is_integer() else float(v) for v in np.unique(label)}
        bad = sorted(found - set(values.tolist()))
        raise DatasetError(f"label values {bad} are not among the plan's labels "
                           f"{values.tolist()}")
    return idx.astype(np.uint8)


def _order(interpolation: str) -> int:
    if interpolation not in INTERPOLATION_ORDER:
        raise ConfigError(f"image_interpolation must be one of {sorted(INTERPOLATION_ORDER)}, "
                          f"got {interpolation!r}")
    return INTERPOLATION_ORDER[interpolation]

"""QC montages: reference and prediction outlines over axial, coronal and sagittal slices.

Slices are taken in RAS array order (:meth:`Volume.to_ras`), drawn in millimetres (so the
aspect ratio follows the voxel spacing) in radiological convention (the patient's right on
the left of axial and coronal views), with orientation letters at the edges. One row per
class, through the median voxel of reference ∪ prediction of that class, zoomed
onto the structure. Without a reference (reviewing predictions), only the prediction is
drawn, on its own grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from medseg.core import Volume
from medseg.metrics.evaluate import CaseMetrics, label_array, resample_onto

REF_COLOR, PRED_COLOR = "#00e000", "#ff2020"
MAX_ROWS = 4
ZOOM_MARGIN_MM = 10.0



class View(NamedTuple):
    """A slice direction on a RAS-ordered array."""

    fixed: int  # the RAS axis the slice is perpendicular to
    x_axis: int  # RAS axis along the panel's x
    y_axis: int  # RAS axis along the panel's y (upwards)
    letters: tuple[str, str, str, str]  # anatomical side at left, right, bottom, top
    flip_x: bool  # radiological display: the patient's right on the left


VIEWS = {
    "axial": View(2, 0, 1, ("R", "L", "P", "A"), True),
    "coronal": View(1, 0, 2, ("R", "L", "I", "S"), True),
    "sagittal": View(0, 1, 2, ("P", "A", "I", "S"), False),
}


def worst_cases(per_case: Mapping[str, CaseMetrics], n: int) -> list[str]:
    """The ``n`` cases with the lowest mean Dice over classes (ties by name)."""
    def mean_dice(case: str) -> float:
        dices = [m["dice"] for m in per_case[case].values() if np.isfinite(m["dice"])]
        return float(np.mean(dices)) if dices else 1.0  # not scored: nothing to look at

    return sorted(per_case, key=lambda c: (mean_dice(c), c))[: max(n, 0)]


def central_slices(mask: np.ndarray) -> tuple[int, int, int]:
    """Per axis, the median voxel index of ``mask`` (a slice through it), centre if empty.

    Unlike the centroid, the median is the index of an actual voxel, so each slice cuts the
    structure even when it is curved.
    """
    coords = np.argwhere(mask)
    if coords.size:
        picks = [int(np.sort(coords[:, axis])[len(coords) // 2]) for axis in range(3)]
    else:
        picks = [size // 2 for size in mask.shape]
    return picks[0], picks[1], picks[2]


def qc_montage(
    ref: Volume | None,
    pred: Volume,
    labels: Mapping[int, str],
    metrics: CaseMetrics,
    image: Volume | None = None,
    title: str = "",
) -> Figure:
    """Montage for one case; ``pred`` (and ``image``, if any) must be on ``ref``'s grid
    or are resampled onto it. ``metrics`` per label may hold Dice and HD95 (with a
    reference) or a predicted volume and an uncertainty score (without)."""
    ref_ras = (ref if ref is not None else pred).to_ras()
    pred_arr = label_array(on_grid(pred, ref_ras, order=0), "prediction")
    ref_arr = (label_array(ref_ras, "reference") if ref is not None
               else np.zeros_like(pred_arr))
    background, window = _background(image, ref_ras, ref_arr if ref is not None else pred_arr)
    rows = _rows_to_show(labels, metrics, ref_arr, pred_arr)
    fig = Figure(figsize=(10.5, 3.4 * len(rows) + 0.6), dpi=100, layout="constrained")
    axes = fig.subplots(len(rows), len(VIEWS), squeeze=False)
    for row, value in enumerate(rows):
        ref_mask, pred_mask = ref_arr == value, pred_arr == value
        centre = central_slices(ref_mask | pred_mask)
        for col, view in enumerate(VIEWS):
            _draw_panel(axes[row, col], view, background, window, ref_mask, pred_mask,
                        centre, ref_ras.spacing)
        axes[row, 0].set_ylabel(_row_label(labels.get(value, str(value)), metrics.get(value, {})),
                                fontsize=9)
    handles = [Line2D([], [], color=PRED_COLOR, label="prediction")]
    if ref is not None:
        handles.insert(0, Line2D([], [], color=REF_COLOR, label="reference"))
    fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
    fig.suptitle(title or str(ref.meta.get("case", "")))
    return fig


def _row_label(name: str, metrics: Mapping[str, float]) -> str:
    if "dice" not in metrics:
        volume, score = metrics.get("pred_volume_ml", np.nan), metrics.get("uncertainty")
        return f"{name}\n{volume:.2f} mL" + ("" if score is None else f", uncertainty {score:.3f}")
    dice, hd = metrics.get("dice", np.nan), metrics.get("hd95_mm", np.nan)
    hd_text = f"{hd:.2f} mm" if np.isfinite(hd) else "undefined"
    return f"{name}\nDice {dice:.3f}, HD95 {hd_text}"


def on_grid(volume: Volume, target: Volume, order: int, channel: int = 0) -> np.ndarray:
    """Channel ``channel`` of ``volume`` on ``target``'s (RAS) grid."""
    arr = volume.array[channel]
    if volume.same_grid(target):
        return arr
    ras = volume.to_ras()
    if ras.same_grid(target):
        return ras.array[channel]
    return resample_onto(arr.astype(np.float32) if order else arr, volume.affine, target, order)


def _background(
    image: Volume | None, ref_ras: Volume, ref_arr: np.ndarray
) -> tuple[np.ndarray, tuple[float, float]]:
    """The image on the reference grid with a 1-99 percentile window, else the label in grey."""
    if image is None:
        return (ref_arr > 0).astype(np.float32) * 0.4, (0.0, 1.0)
    arr = on_grid(image, ref_ras, order=1, channel=0)
    lo, hi = (float(v) for v in np.percentile(arr, [1.0, 99.0]))
    return arr, (lo, hi if hi > lo else lo + 1.0)


def _rows_to_show(
    labels: Mapping[int, str], metrics: CaseMetrics, ref: np.ndarray, pred: np.ndarray
) -> list[int]:
    """Up to :data:`MAX_ROWS` labels present in the case, worst Dice (or most uncertain)
    first, else one row."""
    def badness(value: int) -> float:
        m = metrics.get(value, {})
        return 1.0 - m["dice"] if "dice" in m else m.get("uncertainty", 0.0)

    present = [v for v in labels if (ref == v).any() or (pred == v).any()]
    present.sort(key=lambda v: (-badness(v), v))
    return present[:MAX_ROWS] or [next(iter(labels), 1)]


def _plane(volume: np.ndarray, view: str, index: int) -> np.ndarray:
    v = VIEWS[view]
    plane = np.take(volume, index, axis=v.fixed)
    return plane.T if v.x_axis < v.y_axis else plane  # rows = y, columns = x


def _draw_panel(
    ax: Axes, view: str, background: np.ndarray, window: tuple[float, float],
    ref: np.ndarray, pred: np.ndarray, centre: Sequence[int], spacing: Sequence[float],
) -> None:
    v = VIEWS[view]
    index = centre[v.fixed]
    sx, sy = spacing[v.x_axis], spacing[v.y_axis]
    img = _plane(background, view, index)
    xs, ys = np.arange(img.shape[1]) * sx, np.arange(img.shape[0]) * sy
    extent = (-sx / 2, xs[-1] + sx / 2, -sy / 2, ys[-1] + sy / 2)
    ax.imshow(img, cmap="gray", vmin=window[0], vmax=window[1], origin="lower",
              extent=extent, interpolation="nearest")
    for mask, color in ((ref, REF_COLOR), (pred, PRED_COLOR)):
        plane = _plane(mask, view, index)
        if plane.any():
            ax.contour(xs, ys, plane.astype(np.float32), levels=[0.5], colors=color,
                       linewidths=1.3)
    _zoom(ax, _plane(ref | pred, view, index), xs, ys, extent)
    if v.flip_x:
        ax.invert_xaxis()
    ax.set_title(f"{view} {index}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    for text, pos in zip(v.letters, ((0.02, 0.5), (0.98, 0.5), (0.5, 0.02), (0.5, 0.98)),
                         strict=True):
        ax.text(*pos, text, transform=ax.transAxes, color="yellow", fontsize=9,
                ha="center", va="center")


def _zoom(
    ax: Axes, union: np.ndarray, xs: np.ndarray, ys: np.ndarray, extent: Sequence[float]
) -> None:
    """Limit the panel to the structure's bounding box plus a margin (never past the image)."""
    if not union.any():
        return
    rows, cols = np.nonzero(union)
    x0, x1, y0, y1 = xs[cols.min()], xs[cols.max()], ys[rows.min()], ys[rows.max()]
    margin = max(ZOOM_MARGIN_MM, 0.5 * max(x1 - x0, y1 - y0))
    ax.set_xlim(max(extent[0], x0 - margin), min(extent[1], x1 + margin))
    ax.set_ylim(max(extent[2], y0 - margin), min(extent[3], y1 + margin))

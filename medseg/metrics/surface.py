"""Surface-distance metrics of one class, in millimetres: HD95, ASSD and normalized surface Dice.

Surfaces are MONAI's: the mask voxels removed by a binary erosion (6-connected), and each
distance runs from a surface-voxel centre of one mask to the nearest surface-voxel centre
of the other, scaled by the voxel spacing (so anisotropic grids are measured correctly).
Both directed distance sets are computed once, with
:func:`monai.metrics.utils.get_edge_surface_distance`, and reduced exactly as MONAI's
``compute_hausdorff_distance(percentile=95)``, ``compute_average_surface_distance(
symmetric=True)`` and ``compute_surface_dice`` do (tests check they agree).

Conventions: both masks empty → distances 0 and NSD 1; exactly one empty → distances NaN
(undefined) and NSD 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics.utils import get_edge_surface_distance

HD_PERCENTILE = 95.0


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of ``pred`` to ``ref``'s surface, and back.

    Both boolean masks must be non-empty (MONAI returns inf otherwise) and share one grid
    with voxel size ``spacing``.
    """
    with warnings.catch_warnings():
        # MONAI passes its own deprecated `always_return_as_numpy` argument internally.
        warnings.simplefilter("ignore", FutureWarning)
        _, (pred_to_ref, ref_to_pred), _ = get_edge_surface_distance(
            torch.from_numpy(np.ascontiguousarray(pred, dtype=bool)),
            torch.from_numpy(np.ascontiguousarray(ref, dtype=bool)),
            spacing=[float(s) for s in spacing],
            symmetric=True,
        )
    return _as_float64(pred_to_ref), _as_float64(ref_to_pred)


def _as_float64(distances: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(distances, torch.Tensor):
        distances = distances.cpu().numpy()
    return np.asarray(distances, dtype=np.float64).ravel()


def hd95(pred_to_ref: np.ndarray, ref_to_pred: np.ndarray) -> float:
    """95th-percentile symmetric Hausdorff distance: the larger of the two directed ones."""
    return float(
        max(np.percentile(pred_to_ref, HD_PERCENTILE), np.percentile(ref_to_pred, HD_PERCENTILE))
    )


def assd(pred_to_ref: np.ndarray, ref_to_pred: np.ndarray) -> float:
    """Average symmetric surface distance: the mean over both directed distance sets."""
    return float(np.concatenate([pred_to_ref, ref_to_pred]).mean())


def normalized_surface_dice(
    pred_to_ref: np.ndarray, ref_to_pred: np.ndarray, tolerance_mm: float
) -> float:
    """Fraction of both surfaces lying within ``tolerance_mm`` of the other surface."""
    within = np.count_nonzero(pred_to_ref <= tolerance_mm) + np.count_nonzero(
        ref_to_pred <= tolerance_mm
    )
    return float(within / (pred_to_ref.size + ref_to_pred.size))


def surface_scores(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], nsd_tolerance_mm: float
) -> dict[str, float]:
    """HD95 (mm), ASSD (mm) and NSD at ``nsd_tolerance_mm`` of boolean masks on one grid."""
    pred_any, ref_any = bool(pred.any()), bool(ref.any())
    if not pred_any and not ref_any:
        return {"hd95_mm": 0.0, "assd_mm": 0.0, "nsd": 1.0}
    if pred_any != ref_any:
        return {"hd95_mm": float("nan"), "assd_mm": float("nan"), "nsd": 0.0}
    pred_to_ref, ref_to_pred = surface_distances(pred, ref, spacing)
    return {
        "hd95_mm": hd95(pred_to_ref, ref_to_pred),
        "assd_mm": assd(pred_to_ref, ref_to_pred),
        "nsd": normalized_surface_dice(pred_to_ref, ref_to_pred, nsd_tolerance_mm),
    }

"""Post-processing of predicted label maps."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage


def largest_component(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Keep only the largest connected component of a boolean mask.

    ``connectivity`` 1 joins face neighbours, ``mask.ndim`` joins every neighbour.
    """
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    components, n = ndimage.label(mask, structure=structure)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(sizes.argmax())


def keep_largest_component(
    labels: np.ndarray, classes: Iterable[int], connectivity: int = 1
) -> np.ndarray:
    """Label map where each of ``classes`` keeps only its largest connected component.

    Removed voxels become background (0). The input is not modified.
    """
    out = labels.copy()
    for value in classes:
        mask = labels == value
        if mask.any():
            out[mask & ~largest_component(mask, connectivity)] = 0
    return out

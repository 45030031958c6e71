"""Planar polygons ↔ pixel masks, in continuous pixel-index coordinates (pixel centres at
integers): the two halves of RTSTRUCT reading and writing.

- :func:`fill_even_odd` fills the pixel centres inside a set of polygons by the even-odd
  rule (a centre inside an odd number of them is inside; centres on an outline count as
  inside), so holes and islands drawn as separate polygons come out right. It is a
  vectorised scan-line fill: every edge is crossed with the pixel-centre rows at once
  (half-open rule, so a vertex on a row is counted once), crossings are sorted per row and
  filled pairwise. scikit-image's ``draw.polygon`` (a point-in-polygon test per pixel and
  edge) gives the same pixels but took 10 s instead of 0.3 s on the LUNG1-001 lungs.
- :func:`trace_outlines` traces a mask's outlines by marching squares (scikit-image's
  ``find_contours`` at level 0.5): outer outlines, holes and islands, each a closed polygon
  through the midpoints between inside and outside centres, without the vertices in the
  middle of straight runs. Filling them again with :func:`fill_even_odd` gives back the
  mask exactly (no pixel centre lies within a third of a pixel of an outline).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def fill_even_odd(polygons: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``shape`` mask of the pixel centres inside ``polygons`` (each (n, 2), axis 0
    then axis 1 coordinates, implicitly closed) by the even-odd rule."""
    rows, cols = _crossings(polygons, shape[0])
    mask = np.zeros(shape, bool)
    if rows.size == 0:
        return mask
    order = np.lexsort((cols, rows))
    rows, cols = rows[order].reshape(-1, 2)[:, 0], cols[order].reshape(-1, 2)
    start = np.clip(np.ceil(cols[:, 0]), 0, shape[1]).astype(np.int64)
    stop = np.clip(np.floor(cols[:, 1]) + 1, 0, shape[1]).astype(np.int64)
    keep = stop > start
    rows, start, stop = rows[keep], start[keep], stop[keep]
    if rows.size == 0:
        return mask
    r0, c0, c1 = rows.min(), start.min(), stop.max()  # fill only the bounding box
    change = np.zeros((rows.max() - r0 + 1, c1 - c0 + 1), np.int32)
    np.add.at(change, (rows - r0, start - c0), 1)
    np.add.at(change, (rows - r0, stop - c0), -1)
    mask[r0:rows.max() + 1, c0:c1] = np.cumsum(change[:, :-1], axis=1) > 0
    return mask


def _crossings(polygons: Sequence[np.ndarray], n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of every crossing of a polygon edge with a pixel-centre row."""
    all_rows, all_cols = [], []
    for polygon in polygons:
        a = np.asarray(polygon, np.float64)
        b = np.roll(a, -1, axis=0)
        lo, hi = np.minimum(a[:, 0], b[:, 0]), np.maximum(a[:, 0], b[:, 0])
        first = np.maximum(np.ceil(lo), 0).astype(np.int64)
        last = np.minimum(np.ceil(hi) - 1, n_rows - 1).astype(np.int64)  # rows in [lo, hi)
        counts = np.maximum(last - first + 1, 0)
        edge = np.repeat(np.arange(len(a)), counts)
        row = first[edge] + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts,
                                                                 counts))
        t = (row - a[edge, 0]) / (b[edge, 0] - a[edge, 0])
        all_rows.append(row)
        all_cols.append(a[edge, 1] + t * (b[edge, 1] - a[edge, 1]))
    if not all_rows:
        return np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(all_rows), np.concatenate(all_cols)


def trace_outlines(mask: np.ndarray) -> list[np.ndarray]:
    """Closed outlines (each (n, 2), not repeating its first vertex) of a 2D boolean mask,
    in the mask's index coordinates; empty for an empty mask."""
    from skimage import measure  # lazy: scikit-image is only needed here

    found = np.argwhere(mask)
    if found.size == 0:
        return []
    lo, hi = found.min(0), found.max(0) + 1
    padded = np.pad(mask[lo[0]:hi[0], lo[1]:hi[1]], 1).astype(np.float32)
    return [drop_collinear(line[:-1]) + lo - 1 for line in measure.find_contours(padded, 0.5)]


def drop_collinear(polygon: np.ndarray) -> np.ndarray:
    """The closed ``polygon`` without the vertices in the middle of a straight run (the
    same polygon, exactly: marching squares puts a vertex at every pixel edge crossed)."""
    before, after = np.roll(polygon, 1, axis=0), np.roll(polygon, -1, axis=0)
    u, v = polygon - before, after - polygon
    cross = u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]
    keep = (np.abs(cross) > 1e-9) | (np.einsum("ij,ij->i", u, v) <= 0)
    return polygon[keep] if keep.sum() >= 3 else polygon

"""The one central type: a channel-first array with its exact world geometry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medseg.core import geometry
from medseg.core.errors import GeometryError


@dataclass(frozen=True, eq=False)
class Volume:
    """A volume: ``array`` (C, I, J, K), ``affine`` (4x4 voxel -> RAS mm) and ``meta``.

    Spacing, origin, direction and orientation codes are derived from the affine, never
    stored separately. ``meta`` holds provenance (source path, modality, DICOM UIDs, ...).
    """

    array: np.ndarray
    affine: np.ndarray
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim != 4:
            raise GeometryError(
                f"Volume array must be channel-first 4D (C, I, J, K), got shape {arr.shape}"
            )
        object.__setattr__(self, "array", arr)
        object.__setattr__(self, "affine", geometry.check_affine(self.affine, "Volume affine"))
        object.__setattr__(self, "meta", dict(self.meta))

    @classmethod
    def from_spatial(
        cls, array: np.ndarray, affine: np.ndarray, meta: Mapping[str, Any] | None = None
    ) -> Volume:
        """Build a one-channel volume from a 3D (I, J, K) array."""
        return cls(np.asarray(array)[None], affine, meta or {})

    # --- derived geometry ---------------------------------------------------------------
    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape[1:])  # type: ignore[return-value]

    @property
    def n_channels(self) -> int:
        return int(self.array.shape[0])

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def spacing(self) -> tuple[float, ...]:
        return geometry.spacing(self.affine)

    @property
    def origin(self) -> tuple[float, ...]:
        return geometry.origin(self.affine)

    @property
    def direction(self) -> np.ndarray:
        return geometry.direction(self.affine)

    @property
    def axcodes(self) -> tuple[str, ...]:
        return geometry.axcodes(self.affine)

    # --- derived volumes ------------------------------------------------------------------
    def with_array(self, array: np.ndarray, **meta_updates: Any) -> Volume:
        """Same geometry, new array (e.g. a prediction on this grid)."""
        arr = np.asarray(array)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.shape[1:] != self.array.shape[1:]:
            raise GeometryError(
                f"new array spatial shape {arr.shape[1:]} != volume's {self.spatial_shape}"
            )
        return Volume(arr, self.affine.copy(), {**self.meta, **meta_updates})

    def same_grid(self, other: Volume, atol: float = 1e-3) -> bool:
        """True when ``other`` lies on the same voxel grid (shape and affine)."""
        return geometry.same_grid(
            self.spatial_shape, self.affine, other.spatial_shape, other.affine, atol
        )

    def to_ras(self) -> Volume:
        """The same data with axes permuted/flipped to the closest RAS order."""
        arr, aff, o = geometry.to_ras(self.array, self.affine)
        return Volume(arr, aff, {**self.meta, "orientation_from_source": o.tolist()})

    def summary(self) -> dict[str, Any]:
        """Plain-dict description (shape, spacing, origin, orientation, dtype, range)."""
        finite = self.array[np.isfinite(self.array)] if self.array.dtype.kind == "f" else self.array
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (None, None)
        return {
            "shape": list(self.spatial_shape),
            "channels": self.n_channels,
            "spacing": [round(s, 6) for s in self.spacing],
            "origin": [round(o, 6) for o in self.origin],
            "orientation": "".join(self.axcodes),
            "oblique": geometry.is_oblique(self.affine),
            "dtype": str(self.dtype),
            "range": [lo, hi],
            "affine": self.affine.round(6).tolist(),
        }

    def __repr__(self) -> str:
        sp = "x".join(f"{s:.3g}" for s in self.spacing)
        return (
            f"Volume(shape={self.array.shape}, dtype={self.dtype}, spacing={sp} mm, "
            f"orientation={''.join(self.axcodes)})"
        )

"""Shared fixtures: a factory of tiny synthetic volumes (oblique affines included)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from medseg.core import Volume, geometry

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HIPPOCAMPUS = SHARED_DATA / "hippocampus"
DICOM_ROOT = SHARED_DATA / "dicom"

requires_shared = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real data not present at {SHARED_DATA}"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def make_affine(
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    orientation: str = "RAS",
    oblique_degrees: Sequence[float] = (0.0, 0.0, 0.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """Affine with the given spacing, axis codes (e.g. 'LPS', 'PIR') and extra rotation."""
    axes = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    cols = np.zeros((3, 3))
    for j, code in enumerate(orientation):
        row, sign = axes[code]
        cols[row, j] = sign
    rot = Rotation.from_euler("xyz", oblique_degrees, degrees=True).as_matrix()
    return geometry.compose_affine(rot @ cols, spacing, origin)


def sphere_label(shape: Sequence[int], center: Sequence[float] | None = None,
                 radius: float | None = None, value: int = 1) -> np.ndarray:
    """uint8 array with a ball of ``value`` (voxel units)."""
    grid = np.indices(shape).astype(np.float64)
    c = np.asarray(center if center is not None else [(s - 1) / 2 for s in shape])
    r = radius if radius is not None else min(shape) / 4
    d2 = sum((grid[i] - c[i]) ** 2 for i in range(len(shape)))
    return np.where(d2 <= r * r, value, 0).astype(np.uint8)


@pytest.fixture
def volume_factory() -> Callable[..., Volume]:
    """Factory: ``volume_factory(shape=(8, 9, 10), spacing=..., orientation='LPS',
    oblique_degrees=(10, 0, 5), channels=1, dtype=np.float32, kind='noise'|'sphere'|'label')``."""

    def make(
        shape: Sequence[int] = (8, 9, 10),
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        orientation: str = "RAS",
        oblique_degrees: Sequence[float] = (0.0, 0.0, 0.0),
        origin: Sequence[float] = (0.0, 0.0, 0.0),
        channels: int = 1,
        dtype: np.dtype | type = np.float32,
        kind: str = "noise",
        seed: int = 0,
    ) -> Volume:
        rng = np.random.default_rng(seed)
        shape = tuple(shape)
        if kind == "noise":
            arr = rng.normal(100.0, 20.0, size=(channels, *shape))
        elif kind == "sphere":
            ball = sphere_label(shape).astype(np.float64)
            arr = np.stack([ball * 100 + rng.normal(0, 5, shape) for _ in range(channels)])
        elif kind == "label":
            arr = sphere_label(shape)[None].repeat(channels, 0)
            arr[:, : shape[0] // 2][arr[:, : shape[0] // 2] > 0] = 2
        else:
            raise ValueError(kind)
        aff = make_affine(spacing, orientation, oblique_degrees, origin)
        return Volume(arr.astype(dtype), aff, {"case": f"synthetic_{seed}"})

    return make

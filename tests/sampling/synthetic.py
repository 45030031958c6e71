"""A tiny in-memory cache of sphere cases and a matching plan, for sampling/training tests."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from medseg.preprocess.plan import Plan
from tests.conftest import sphere_label


class MemoryCache:
    """Cases held in memory with the cache's ``image``/``label``/``foreground`` API."""

    def __init__(self, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> None:
        self.images, self.labels = images, labels
        self.case_ids = sorted(images)

    def image(self, case: str, mmap: bool = True) -> np.ndarray:
        return self.images[case]

    def label(self, case: str, mmap: bool = True) -> np.ndarray:
        return self.labels[case]

    def foreground(self, case: str) -> Mapping[int, np.ndarray]:
        lab = self.labels[case][0]
        return {k: np.argwhere(lab == k).astype(np.int32) for k in range(1, int(lab.max()) + 1)}


def sphere_cases(n: int = 6, shape: tuple[int, int, int] = (24, 24, 24), seed: int = 0
                 ) -> MemoryCache:
    """Cases with a ball (class 1 in one half, class 2 in the other) at a random place."""
    rng = np.random.default_rng(seed)
    images, labels = {}, {}
    for i in range(n):
        center = [rng.uniform(s * 0.35, s * 0.65) for s in shape]
        ball = sphere_label(shape, center, radius=min(shape) / 4.5)
        lab = ball.copy()
        lab[: int(center[0])][ball[: int(center[0])] > 0] = 2
        img = np.where(lab == 1, 1.0, 0.0) + np.where(lab == 2, 2.0, 0.0)
        img = img + rng.normal(0, 0.3, shape)
        images[f"case_{i}"] = img[None].astype(np.float32)
        labels[f"case_{i}"] = lab[None].astype(np.uint8)
    return MemoryCache(images, labels)


def sphere_plan(filters: tuple[int, ...] = (8, 16, 32), patch: tuple[int, ...] = (24, 24, 24),
                batch_size: int = 2, deep_supervision: bool = True) -> Plan:
    """A plan with a small 3D and 2D configuration (slice axis 0) for the sphere cases."""
    levels = len(filters)
    strides3 = [[1, 1, 1]] + [[2, 2, 2]] * (levels - 1)
    config3 = {"patch_size": list(patch), "batch_size": batch_size, "spacing": [1, 1, 1],
               "kernel_sizes": [[3, 3, 3]] * levels, "strides": strides3,
               "filters": list(filters), "deep_supervision": deep_supervision}
    config2 = {"patch_size": list(patch[1:]), "batch_size": batch_size * 4, "spacing": [1, 1],
               "kernel_sizes": [[3, 3]] * levels, "strides": [s[:2] for s in strides3],
               "filters": list(filters), "deep_supervision": deep_supervision, "slice_axis": 0}
    return Plan.from_dict({
        "format": "medseg-plan-v1", "dataset_name": "Spheres",
        "labels": {"0": "background", "1": "left", "2": "right"}, "channels": {"0": "MRI"},
        "target_spacing": [1.0, 1.0, 1.0], "normalization": [{"scheme": "zscore_nonzero"}],
        "configurations": {"3d": config3, "2d": config2},
    })

"""Dataset fingerprint: spacings and shapes (RAS axis order, after cropping to non-zero),
foreground intensity statistics per channel, class frequencies."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from medseg.core import geometry
from medseg.data import Case, Dataset, read_case
from medseg.preprocess.steps import Grid, crop_to_nonzero, reorient

FOREGROUND_SAMPLES_PER_CASE = 10_000


@dataclass(frozen=True)
class IntensityStats:
    """Foreground intensity statistics of one channel over the whole dataset."""

    mean: float
    std: float
    median: float
    min: float
    max: float
    percentile_00_5: float
    percentile_99_5: float

    @classmethod
    def of(cls, values: np.ndarray) -> IntensityStats:
        if values.size == 0:
            return cls(0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        lo, med, hi = np.percentile(values, [0.5, 50.0, 99.5])
        return cls(float(values.mean()), float(values.std()), float(med), float(values.min()),
                   float(values.max()), float(lo), float(hi))


@dataclass(frozen=True)
class CaseFingerprint:
    """Per-case facts gathered in one read."""

    case_id: str
    spacing: tuple[float, ...]
    shape: tuple[int, ...]  # after reorientation and cropping
    foreground: tuple[np.ndarray, ...]  # sampled foreground intensities per channel
    class_counts: tuple[int, ...]


@dataclass(frozen=True)
class Fingerprint:
    """What planning needs to know about a dataset."""

    n_cases: int
    spacings: tuple[tuple[float, ...], ...]
    shapes: tuple[tuple[int, ...], ...]
    intensity: tuple[IntensityStats, ...]
    class_frequencies: tuple[float, ...]
    # fraction of the cases whose label contains each class (index 0: background)
    class_presence: tuple[float, ...] = ()

    @property
    def median_spacing(self) -> tuple[float, ...]:
        return tuple(float(v) for v in np.median(np.asarray(self.spacings), axis=0))

    @property
    def median_shape(self) -> tuple[float, ...]:
        return tuple(float(v) for v in np.median(np.asarray(self.shapes), axis=0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_cases": self.n_cases,
            "median_spacing": list(self.median_spacing),
            "median_shape": list(self.median_shape),
            "class_frequencies": list(self.class_frequencies),
            "class_presence": list(self.class_presence),
            "intensity": [asdict(s) for s in self.intensity],
            "spacings": [list(s) for s in self.spacings],
            "shapes": [list(s) for s in self.shapes],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Fingerprint:
        return cls(
            n_cases=int(d["n_cases"]),
            spacings=tuple(tuple(float(v) for v in s) for s in d["spacings"]),
            shapes=tuple(tuple(int(v) for v in s) for s in d["shapes"]),
            intensity=tuple(IntensityStats(**s) for s in d["intensity"]),
            class_frequencies=tuple(float(v) for v in d["class_frequencies"]),
            class_presence=tuple(float(v) for v in d.get("class_presence", ())),
        )


def fingerprint_case(case: Case, label_values: tuple[int, ...], seed: int = 0) -> CaseFingerprint:
    """Read one case and gather its spacing, cropped shape and foreground intensities."""
    image, label = read_case(case)
    grid, _ = reorient(Grid(image.array, None if label is None else label.array, image.affine))
    grid, _ = crop_to_nonzero(grid)
    rng = np.random.default_rng(seed)
    if grid.label is not None:
        fg = grid.label[0] != 0
        counts = tuple(int(np.count_nonzero(grid.label == v)) for v in label_values)
    else:
        fg = np.ones(grid.image.shape[1:], dtype=bool)
        counts = (0,) * len(label_values)
    samples = tuple(_sample(grid.image[c][fg], rng) for c in range(grid.image.shape[0]))
    return CaseFingerprint(case.case_id, geometry.spacing(grid.affine),
                           tuple(grid.image.shape[1:]), samples, counts)


def compute_fingerprint(dataset: Dataset, workers: int = 4, progress: bool = True) -> Fingerprint:
    """Fingerprint every training case of ``dataset`` (assumed validated)."""
    values = dataset.label_values

    def one(item: tuple[int, Case]) -> CaseFingerprint:
        return fingerprint_case(item[1], values, seed=item[0])

    with ThreadPoolExecutor(max(1, workers)) as pool:
        cases = list(tqdm(pool.map(one, enumerate(dataset.cases)), total=len(dataset.cases),
                          desc="fingerprint", unit="case", disable=not progress, leave=False))
    return combine(cases, len(dataset.channels))


def combine(cases: list[CaseFingerprint], n_channels: int) -> Fingerprint:
    """Pool per-case fingerprints into the dataset fingerprint."""
    intensity = tuple(
        IntensityStats.of(np.concatenate([c.foreground[ch] for c in cases]).astype(np.float64))
        for ch in range(n_channels)
    )
    per_case = np.asarray([c.class_counts for c in cases], dtype=np.float64)
    counts = per_case.sum(axis=0)
    freqs = counts / counts.sum() if counts.sum() else counts
    presence = (per_case > 0).mean(axis=0)
    return Fingerprint(
        n_cases=len(cases), spacings=tuple(c.spacing for c in cases),
        shapes=tuple(c.shape for c in cases), intensity=intensity,
        class_frequencies=tuple(float(f) for f in freqs),
        class_presence=tuple(float(p) for p in presence),
    )


def _sample(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if values.size <= FOREGROUND_SAMPLES_PER_CASE:
        return values.astype(np.float32)
    return rng.choice(values, FOREGROUND_SAMPLES_PER_CASE, replace=False).astype(np.float32)

"""Validation pass over every case before heavy work: bad cases are listed, never fatal
half-way (unless ``strict``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from tqdm import tqdm

from medseg.core import Volume
from medseg.core.errors import DatasetError, GeometryError, InputError
from medseg.data.dataset import Case, Dataset
from medseg.data.reading import read_case


@dataclass(frozen=True)
class ValidationReport:
    """Valid cases, and ``(case_id, reason)`` for every excluded one."""

    valid: tuple[Case, ...]
    excluded: tuple[tuple[str, str], ...]

    @property
    def ok(self) -> bool:
        return not self.excluded

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_valid": len(self.valid),
            "valid": [c.case_id for c in self.valid],
            "excluded": [{"case_id": c, "reason": r} for c, r in self.excluded],
        }

    def summary(self) -> str:
        lines = [f"{len(self.valid)} valid case(s), {len(self.excluded)} excluded"]
        lines += [f"  excluded {c}: {r}" for c, r in self.excluded]
        return "\n".join(lines)


def validate_dataset(
    dataset: Dataset, strict: bool = False, workers: int = 4, progress: bool = True
) -> ValidationReport:
    """Check every training case; raise DatasetError listing all problems if ``strict``.

    Checks: files readable, channels on one grid, no NaN/Inf, image not empty, label present
    and on the image grid, label values among the declared labels.
    """
    check = partial(case_problem, declared_labels=set(dataset.labels),
                    n_channels=len(dataset.channels))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        reasons = list(tqdm(pool.map(check, dataset.cases), total=len(dataset.cases),
                            desc="validate", unit="case", disable=not progress, leave=False))
    valid = tuple(c for c, r in zip(dataset.cases, reasons, strict=True) if r is None)
    excluded = tuple((c.case_id, r) for c, r in zip(dataset.cases, reasons, strict=True)
                     if r is not None)
    report = ValidationReport(valid, excluded)
    if strict and excluded:
        raise DatasetError(f"{len(excluded)} invalid case(s) (strict mode):\n{report.summary()}",
                           dataset.root)
    if not valid:
        raise DatasetError(f"no valid case left:\n{report.summary()}", dataset.root)
    return report


def case_problem(
    case: Case, declared_labels: set[int], n_channels: int | None = None
) -> str | None:
    """Why ``case`` is unusable, or None if it passes every check.

    ``n_channels``: the dataset's declared channel count (a 4D file where a 3D one is
    expected gives more image channels than declared).
    """
    if case.label is None:
        return "missing label"
    missing = [str(p) for p in case.files() if not p.exists()]
    if missing:
        return f"missing file: {', '.join(missing)}"
    try:
        image, label = read_case(case, allow_nonfinite=True)
    except GeometryError as exc:
        return f"bad geometry: {exc}"
    except InputError as exc:
        return f"unreadable: {exc}"
    except (ValueError, OSError, EOFError, MemoryError) as exc:  # a reader bug must not
        # stop the pass over the other cases; the type is kept for the bug report
        return f"unreadable ({type(exc).__name__}): {exc}"
    if n_channels is not None and image.n_channels != n_channels:
        return (f"image has {image.n_channels} channels but the dataset declares "
                f"{n_channels} (a 4D file where 3D is expected?)")
    problem = image_problem(image)
    if problem is None and label is not None:
        problem = label_problem(image, label, declared_labels)
    return problem


def image_problem(image: Volume) -> str | None:
    """NaN/Inf or empty (no voxels, or every voxel equal) image."""
    arr = image.array
    if arr.size == 0:
        return "empty image (no voxels)"
    if arr.dtype.kind in "fc":
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if bad:
            return f"{bad} NaN/Inf voxel(s) in image"
    if arr.min() == arr.max():
        return f"empty image (every voxel is {arr.flat[0]})"
    return None


def label_problem(image: Volume, label: Volume, declared: set[int]) -> str | None:
    """Grid mismatch, several channels, non-integer or undeclared values."""
    if label.n_channels != 1:
        return f"label has {label.n_channels} channels, expected 1"
    if not image.same_grid(label):
        return (f"label grid differs from image grid (shape {label.spatial_shape} vs "
                f"{image.spatial_shape}, or affine differs by more than 1e-3 mm)")
    arr = label.array
    source = label.meta.get("source", "label")
    if arr.dtype.kind in "fc":
        if not np.all(np.isfinite(arr)):
            return f"NaN/Inf in label {source}"
        fractional = arr[arr != np.round(arr)]
        if fractional.size:
            examples = ", ".join(f"{v:g}" for v in np.unique(fractional)[:3])
            return (f"label {source} has non-integral values ({examples}); a label file may "
                    f"be stored as float only when every value is a whole number")
    values = {int(v) for v in np.unique(arr)}
    undeclared = sorted(values - declared)
    if undeclared:
        return (f"label values {undeclared} in {source} are not among the declared labels "
                f"{sorted(declared)}")
    return None

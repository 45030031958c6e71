"""Post-processing of predicted label maps: keeping each class's largest connected
component, and the validation evidence that decides for which classes it is done."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class ComponentEvidence:
    """Validation Dice of each foreground class (class index ``k`` at position ``k - 1``)
    as predicted and after keeping only its largest connected component, with the number
    of validation cases that scored it. Written with a checkpoint by training; decides,
    as nnU-Net's post-processing does, for which classes prediction keeps the largest
    component by default."""

    dice: tuple[float, ...]
    dice_largest: tuple[float, ...]
    cases: tuple[int, ...]

    def to_dict(self) -> dict[str, list[float] | list[int]]:
        return {"dice": list(self.dice), "dice_largest_component": list(self.dice_largest),
                "cases": list(self.cases)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ComponentEvidence:
        return cls(tuple(float(x) for x in d["dice"]),
                   tuple(float(x) for x in d["dice_largest_component"]),
                   tuple(int(n) for n in d["cases"]))

    def improved(self) -> tuple[int, ...]:
        """Class indices whose validation Dice rose when only their largest component was
        kept (a class scored on no case, or not improved, is left as predicted)."""
        return tuple(k for k, (raw, kept, n) in enumerate(
            zip(self.dice, self.dice_largest, self.cases, strict=True), start=1)
            if n > 0 and kept > raw)

    def describe(self, names: Sequence[str]) -> str:
        """One line: the classes whose largest component alone will be kept, with their
        validation Dice before and after (``names[k - 1]`` names class ``k``)."""
        chosen = self.improved()
        if not chosen:
            return ("post-processing: none (keeping only the largest connected component "
                    "raised no class's validation Dice)")
        parts = [f"{names[k - 1]} {self.dice[k - 1]:.3f} -> {self.dice_largest[k - 1]:.3f}"
                 for k in chosen]
        return ("post-processing: the largest connected component only, for "
                + ", ".join(parts) + " (validation Dice)")


def pool_evidence(records: Sequence[ComponentEvidence]) -> ComponentEvidence | None:
    """One evidence for an ensemble of folds: each class's Dice averaged over the folds,
    weighted by the validation cases that scored it (None without any record)."""
    if not records:
        return None
    cases = np.array([r.cases for r in records], dtype=np.float64)
    total = cases.sum(axis=0)

    def pooled(values: np.ndarray) -> tuple[float, ...]:
        weighted = np.nan_to_num(values) * cases
        return tuple(float(w / t) if t else float("nan")
                     for w, t in zip(weighted.sum(axis=0), total, strict=True))

    return ComponentEvidence(pooled(np.array([r.dice for r in records], dtype=np.float64)),
                             pooled(np.array([r.dice_largest for r in records],
                                             dtype=np.float64)),
                             tuple(int(t) for t in total))

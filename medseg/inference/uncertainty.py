"""Uncertainty of a prediction: per-voxel maps and a per-case score (``--uncertainty``).

The ensemble's members are the fold networks times the test-time mirrorings (one member
per fold and mirroring; without ``tta`` one per fold). Every member is a full
sliding-window prediction ``p_m``; the ensembled probabilities are the ones
:meth:`Predictor.probabilities` computes (mirrorings of a fold averaged as logits, folds as
probabilities), so the label map is the one ``medseg predict`` writes without
``--uncertainty``. Maps, on the network grid, normalised by ``log K`` to [0, 1]:

- ``entropy``: ``H(p) / log K`` of the ensembled probabilities: 0 where the ensemble gives
  one class probability 1, 1 where all classes are equally likely;
- ``disagreement`` (two members or more): the mutual information between the class and
  the member, ``(H(mean_m p_m) - mean_m H(p_m)) / log K``: 0 where every member gives the
  same probabilities (however uncertain), 1 where members are each certain of different
  classes spread evenly.

The per-case score estimates the Dice loss the uncertain voxels could cause. For each
foreground class ``c``: ``U_c`` sums the entropy over the voxels predicted ``c`` and, where
``c`` is the second most probable class, the entropy times ``p_c / p_top`` (a near tie
counts fully, a remote alternative hardly: a voxel's share changes continuously when ``c``
overtakes the top class); ``P_c`` counts the voxels predicted ``c``, and
``score_c = U_c / (2 P_c + U_c)`` (the form of ``1 - Dice`` when ``U_c`` voxels are wrong;
0 for a class confidently absent, 1 for one uncertain but never predicted). The case
score is the mean over the foreground classes, like the mean Dice it is meant to rank.

Maps are mapped back onto the source grid with linear interpolation (0 outside the crop).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core import Volume, sidecars
from medseg.core.atomic import write_json
from medseg.core.errors import ConfigError
from medseg.inference.predictor import Prediction, Predictor
from medseg.inference.sliding_window import mirror_sets, predict_probabilities
from medseg.io import write_volume
from medseg.preprocess.case import PreprocessedCase
from medseg.preprocess.invert_chunks import invert_map

CHUNK = 16  # slices of the last axis per temporary
TINY = 1e-30  # log of a zero probability is taken as log(TINY); 0 * log(TINY) = 0
MAP_STEP = 1.0 / 4096  # maps are stored rounded to this step (they compress ~4x better)


@dataclass(frozen=True)
class EnsembleResult:
    """Ensembled probabilities and the uncertainty maps, on the preprocessed grid."""

    probabilities: np.ndarray  # float32 (K, X, Y, Z)
    entropy: np.ndarray  # float32 (X, Y, Z) in [0, 1]
    disagreement: np.ndarray | None  # float32 (X, Y, Z) in [0, 1]; None with one member
    folds: int
    mirrorings: int

    @property
    def members(self) -> int:
        return self.folds * self.mirrorings


@dataclass(frozen=True)
class CaseUncertainty:
    """What ``--uncertainty`` writes for a case: maps on the source grid and the score."""

    entropy: np.ndarray  # float32 (I, J, K), source grid
    disagreement: np.ndarray | None
    score: dict[str, Any]


def _chunks(shape: Sequence[int], chunk: int = CHUNK) -> Iterator[tuple[slice, ...]]:
    """Index tuples covering a (..., Z) array a few slices of the last axis at a time."""
    for k in range(0, shape[-1], chunk):
        yield (Ellipsis, slice(k, k + chunk))


def normalized_entropy(probs: np.ndarray) -> np.ndarray:
    """``H(p) / log K`` over the class axis of ``(K, X, Y, Z)`` probabilities (float32)."""
    n_classes = probs.shape[0]
    out = np.zeros(probs.shape[1:], dtype=np.float32)
    if n_classes < 2:
        return out
    for sl in _chunks(probs.shape):
        p = probs[sl].astype(np.float32)
        out[sl] = -(p * np.log(np.maximum(p, TINY))).sum(0)
    out *= 1.0 / math.log(n_classes)
    return np.clip(out, 0.0, 1.0, out=out)


def _softmax_of_mean(log_sum: np.ndarray, n: int) -> np.ndarray:
    """``softmax(log_sum / n)`` over the class axis, in place, chunked."""
    for sl in _chunks(log_sum.shape):
        x = log_sum[sl] / n
        x -= x.max(axis=0, keepdims=True)
        np.exp(x, out=x)
        x /= x.sum(axis=0, keepdims=True)
        log_sum[sl] = x
    return log_sum


class EnsembleAccumulator:
    """Running sums over ensemble members, ``mirrorings`` members per fold, fold by fold
    (see the module docstring); float32 whatever the members' precision."""

    def __init__(self, mirrorings: int = 1) -> None:
        self.mirrorings = mirrorings
        self.folds = 0
        self.members = 0
        self._fold_sum: np.ndarray | None = None  # sum over folds of the fold's probabilities
        self._member_sum: np.ndarray | None = None  # sum of p_m (only with mirrorings)
        self._member_entropy: np.ndarray | None = None  # sum of H(p_m) / log K
        self._log_sum: np.ndarray | None = None  # this fold: sum of log p_m over mirrorings
        self._in_fold = 0

    def add_member(self, probs: np.ndarray) -> None:
        """One member's probabilities ``(K, X, Y, Z)``; every ``mirrorings`` members
        complete a fold."""
        probs = np.asarray(probs, dtype=np.float32)
        self._member_entropy = _add(self._member_entropy, normalized_entropy(probs))
        if self.mirrorings == 1:
            self._fold_sum = _add(self._fold_sum, probs)
            self.folds += 1
        else:
            self._member_sum = _add(self._member_sum, probs)
            self._log_sum = _add(self._log_sum, _log(probs))
            self._in_fold += 1
            if self._in_fold == self.mirrorings:
                fold = _softmax_of_mean(self._log_sum, self.mirrorings)
                self._fold_sum = _add(self._fold_sum, fold)
                self._log_sum, self._in_fold = None, 0
                self.folds += 1
        self.members += 1

    def result(self) -> EnsembleResult:
        """Ensembled probabilities and maps."""
        if self._fold_sum is None or self._member_entropy is None or self._in_fold:
            raise ValueError(f"incomplete ensemble: {self.members} member(s) added, "
                             f"{self.mirrorings} per fold")
        probs = self._fold_sum / self.folds if self.folds > 1 else self._fold_sum
        disagreement = None
        if self.members > 1:
            members_mean = (self._member_sum / self.members if self._member_sum is not None
                            else probs)
            disagreement = normalized_entropy(members_mean)
            disagreement -= self._member_entropy / self.members
            np.clip(disagreement, 0.0, 1.0, out=disagreement)
        return EnsembleResult(probs, normalized_entropy(probs), disagreement, self.folds,
                              self.mirrorings)


def _add(total: np.ndarray | None, value: np.ndarray) -> np.ndarray:
    """``total + value`` in place (``value`` itself, copied, for the first term)."""
    if total is None:
        return value.copy()
    total += value
    return total


def _log(probs: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(probs, TINY), dtype=np.float32)


def check_supported(predictor: Predictor) -> None:
    """Raise :class:`ConfigError` for predictors whose probabilities are not medseg's
    sliding-window ensemble (e.g. nnU-Net model folders): their members cannot be
    predicted one by one here."""
    if type(predictor).probabilities is not Predictor.probabilities:
        raise ConfigError(f"uncertainty maps are not available for this model "
                          f"({predictor.describe()}): it computes its probabilities its own "
                          "way; predict without --uncertainty/--report")


def ensemble(predictor: Predictor, image: np.ndarray) -> EnsembleResult:
    """Every member's sliding-window prediction of a preprocessed image, accumulated."""
    check_supported(predictor)
    options = predictor.window_options()
    mirror_axes = options.pop("mirror_axes")
    mirrors = mirror_sets(mirror_axes, options["patch_size"], options["slice_axis"])
    acc = EnsembleAccumulator(len(mirrors))
    for net in predictor.networks:
        for mirror in mirrors:
            acc.add_member(predict_probabilities(net, image, mirrors=[mirror], **options))
    return acc.result()


def class_scores(
    probs: np.ndarray, entropy: np.ndarray, label_values: Sequence[int],
    disagreement: np.ndarray | None = None,
) -> dict[int, dict[str, float]]:
    """Per foreground label value, in voxels of the network grid: ``score`` (see the module
    docstring) from ``uncertain`` (``U_c``) and ``predicted`` (``P_c``); also, for
    comparison, ``expected_dice_loss`` (1 - Dice between the label map and the class
    probabilities, as if they were calibrated), ``mean_entropy_predicted`` (mean entropy
    over the voxels predicted ``c``) and, for ensembles, ``mean_disagreement_predicted``."""
    n = probs.shape[0]
    sums = {key: np.zeros(n) for key in ("predicted", "u_top", "u_second", "top_prob",
                                         "prob", "d_top")}
    for sl in _chunks(probs.shape):
        p = probs[sl]
        order = np.argsort(p, axis=0)
        top, runner_up = order[-1].ravel(), order[-2 if n > 1 else -1].ravel()
        h = entropy[sl].astype(np.float64).ravel()
        second = runner_up != top
        sums["predicted"] += np.bincount(top, minlength=n)
        sums["u_top"] += np.bincount(top, weights=h, minlength=n)
        top_prob = p.max(0).astype(np.float64).ravel()
        flat = p.reshape(n, -1)
        odds = flat[runner_up, np.arange(top.size)] / np.maximum(top_prob, TINY)
        sums["u_second"] += np.bincount(runner_up[second], weights=(h * odds)[second],
                                        minlength=n)
        sums["top_prob"] += np.bincount(top, weights=top_prob, minlength=n)
        sums["prob"] += p.astype(np.float64).sum(axis=tuple(range(1, p.ndim)))
        if disagreement is not None:
            d = disagreement[sl].astype(np.float64).ravel()
            sums["d_top"] += np.bincount(top, weights=d, minlength=n)
    return {int(value): _class_entry(sums, k, disagreement is not None)
            for k, value in enumerate(label_values) if k > 0}  # index 0 is the background


def _class_entry(sums: Mapping[str, np.ndarray], k: int, ensemble: bool) -> dict[str, float]:
    predicted = float(sums["predicted"][k])
    uncertain = float(sums["u_top"][k] + sums["u_second"][k])
    soft_total = predicted + float(sums["prob"][k])
    entry = {
        "score": uncertain / (2 * predicted + uncertain) if uncertain > 0 else 0.0,
        "uncertain": uncertain, "predicted": predicted,
        "expected_dice_loss": (1.0 - 2 * float(sums["top_prob"][k]) / soft_total
                               if soft_total > 0 else 0.0),
        "mean_entropy_predicted": float(sums["u_top"][k]) / predicted if predicted else 0.0,
    }
    if ensemble:
        entry["mean_disagreement_predicted"] = (float(sums["d_top"][k]) / predicted
                                                if predicted else 0.0)
    return entry


def case_score(
    result: EnsembleResult, label_values: Sequence[int], names: Mapping[int, str],
    case: str | None = None,
) -> dict[str, Any]:
    """The JSON-ready content of ``<case>_uncertainty.json``: ``score`` (the mean of the
    labels' scores) and its parts per label, with the alternatives of :func:`class_scores`
    averaged the same way (``benchmarks/uncertainty_ranking.py`` compares them)."""
    per_class = class_scores(result.probabilities, result.entropy, label_values,
                             result.disagreement)

    def mean(key: str) -> float | None:
        values = [c[key] for c in per_class.values() if key in c]
        return float(np.mean(values)) if values else None

    return {
        "format": sidecars.SCORE_FORMAT,
        "case": case,
        "score": mean("score") or 0.0,
        "per_label": {str(v): {"name": names.get(v, str(v)), **c} for v, c in per_class.items()},
        "expected_dice_loss": mean("expected_dice_loss"),
        "mean_entropy_predicted": mean("mean_entropy_predicted"),
        "mean_disagreement_predicted": mean("mean_disagreement_predicted"),
        "mean_entropy": float(result.entropy.mean()),
        "members": result.members, "folds": result.folds, "mirrorings": result.mirrorings,
        "grid": "network",
    }


def to_source_grid(values: np.ndarray, record: Mapping[str, Any]) -> np.ndarray:
    """A float map ``(X, Y, Z)`` on the preprocessed grid -> float32 on the source grid
    (linear where resampled, 0 where cropped away), inverted slab by slab."""
    return invert_map(values[None].astype(np.float32, copy=False), record)[0]


def predict_with_uncertainty(
    predictor: Predictor,
    volume: Volume,
    pre: PreprocessedCase | None = None,
    with_probabilities: bool = False,
) -> tuple[Prediction, CaseUncertainty]:
    """Like :meth:`Predictor.predict` (same label map), plus the uncertainty of the case."""
    pre = pre if pre is not None else predictor.preprocess(volume)
    result = ensemble(predictor, pre.image)
    score = case_score(result, pre.record["label_values"], predictor.label_names,
                       volume.meta.get("case") or pre.record.get("case"))
    uncertainty = CaseUncertainty(
        to_source_grid(result.entropy, pre.record),
        None if result.disagreement is None else to_source_grid(result.disagreement,
                                                                 pre.record),
        score)
    prediction = predictor.from_probabilities(volume, pre, result.probabilities,
                                              with_probabilities)
    return prediction, uncertainty


def write_uncertainty(
    folder: Path, case: str, uncertainty: CaseUncertainty, grid: Volume
) -> list[Path]:
    """Write the maps (on ``grid``'s geometry) and the score file; returns the paths."""
    written = [sidecars.uncertainty_map_path(folder, case)]
    write_volume(grid.with_array(_stored(uncertainty.entropy)[None]), written[0])
    if uncertainty.disagreement is not None:
        written.append(sidecars.disagreement_map_path(folder, case))
        write_volume(grid.with_array(_stored(uncertainty.disagreement)[None]), written[1])
    written.append(sidecars.uncertainty_score_path(folder, case))
    write_json(written[-1], {**uncertainty.score, "case": case})
    return written


def _stored(values: np.ndarray) -> np.ndarray:
    """float32 rounded to :data:`MAP_STEP` (exact in float32; the low mantissa bits are 0)."""
    return (np.round(values * (1 / MAP_STEP)) * MAP_STEP).astype(np.float32)

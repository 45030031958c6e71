"""Seeded K-fold splits, written once to ``RUN/splits.json`` and reused afterwards."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.core.atomic import write_json
from medseg.core.errors import ConfigError
from medseg.train.settings import DEFAULT_FOLDS, DEFAULT_SEED

Split = dict[str, list[str]]


def make_splits(case_ids: Sequence[str], n_folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED
                ) -> list[Split]:
    """K folds of (train, val) case lists; every case is validated in exactly one fold."""
    cases = sorted(case_ids)
    if len(cases) < n_folds:
        raise ConfigError(f"{len(cases)} cases cannot make {n_folds} folds")
    order = np.random.default_rng(seed).permutation(len(cases))
    folds = np.array_split(order, n_folds)
    splits = []
    for k in range(n_folds):
        val = sorted(cases[i] for i in folds[k])
        splits.append({"train": [c for c in cases if c not in set(val)], "val": val})
    return splits


def load_or_create_splits(
    run_dir: str | Path, case_ids: Sequence[str], n_folds: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
) -> list[Split]:
    """The run's splits: read ``splits.json`` if present, else create and write it."""
    path = Path(run_dir) / "splits.json"
    if path.is_file():
        try:
            splits = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"invalid JSON: {exc}", path) from exc
        unknown = {c for s in splits for c in s["train"] + s["val"]} - set(case_ids)
        if unknown:
            raise ConfigError(f"splits name cases that are not in the cache: "
                              f"{sorted(unknown)[:5]}", path)
        return splits
    splits = make_splits(case_ids, n_folds, seed)
    write_json(path, splits)
    return splits


def fold_cases(splits: Sequence[Split], fold: int | str, case_ids: Sequence[str]
               ) -> tuple[list[str], list[str]]:
    """(train, val) case ids of ``fold``; ``"all"`` trains on every case, validates none."""
    if fold == "all":
        return sorted(case_ids), []
    k = int(fold)
    if not 0 <= k < len(splits):
        raise ConfigError(f"fold {fold} does not exist (splits have {len(splits)} folds)")
    return list(splits[k]["train"]), list(splits[k]["val"])

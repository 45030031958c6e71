"""The fixed hold-out set: labelled cases kept out of training for the evaluation stage."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.core.atomic import write_json
from medseg.core.errors import DatasetError
from medseg.data import Case, Dataset, read_listing

HOLDOUT_FILE = "holdout.json"
LISTING_FILE = "dataset.json"


def draw_holdout(case_ids: Sequence[str], fraction: float, seed: int) -> tuple[str, ...]:
    """A reproducible ``fraction`` of ``case_ids`` (at least one when fraction > 0).

    Depends only on the sorted ids and the seed, so the same dataset always gives the same
    hold-out; at least one case is left for training.
    """
    ids = sorted(case_ids)
    if fraction <= 0 or not ids:
        return ()
    count = min(max(1, round(fraction * len(ids))), len(ids) - 1)
    order = np.random.default_rng(seed).permutation(len(ids))[:count]
    return tuple(sorted(ids[i] for i in order))


def write_holdout(run_dir: Path, held_out: Sequence[str], fraction: float, seed: int) -> None:
    """``RUN/holdout.json``: the held-out case ids and how they were drawn."""
    write_json(run_dir / HOLDOUT_FILE,
               {"fraction": fraction, "seed": seed, "cases": list(held_out)})


def read_holdout(run_dir: Path) -> tuple[str, ...]:
    """The held-out case ids written by the ingest stage."""
    path = run_dir / HOLDOUT_FILE
    try:
        return tuple(json.loads(path.read_text())["cases"])
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read the hold-out list: {exc}", path) from exc


def split_dataset(run_dir: Path) -> tuple[Dataset, tuple[Case, ...]]:
    """(training dataset, held-out cases) from the run folder's listing and hold-out."""
    dataset = read_listing(run_dir / LISTING_FILE)
    held = set(read_holdout(run_dir))
    train = tuple(c for c in dataset.cases if c.case_id not in held)
    return dataset.with_cases(train), tuple(c for c in dataset.cases if c.case_id in held)

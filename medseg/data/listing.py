"""The run folder's ``dataset.json``: the dataset listing plus its validation result."""

from __future__ import annotations

import json
from pathlib import Path

from medseg.core.atomic import write_json
from medseg.core.errors import DatasetError
from medseg.data.dataset import Dataset
from medseg.data.validate import ValidationReport


def write_listing(path: str | Path, dataset: Dataset, report: ValidationReport) -> None:
    """Write the full dataset and its validation report (excluded cases with reasons)."""
    write_json(path, {**dataset.to_dict(), "validation": report.to_dict()})


def read_listing(path: str | Path) -> Dataset:
    """The dataset of a listing, restricted to the cases validation kept."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read dataset listing: {exc}", path) from exc
    dataset = Dataset.from_dict(data)
    validation = data.get("validation")
    if validation is None:
        return dataset
    keep = set(validation["valid"])
    return dataset.with_cases(tuple(c for c in dataset.cases if c.case_id in keep))

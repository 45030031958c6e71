"""Fixtures shared by the inference tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inference.helpers import tiny_plan, write_run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run folder with two trained folds of the tiny test plan."""
    write_run(tmp_path / "run", tiny_plan(), folds=[0, 1])
    return tmp_path / "run"

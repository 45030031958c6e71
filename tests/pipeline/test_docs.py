"""The README and docs/ point at things that exist and import what they show."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_exist(page: Path):
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text())
    missing = [link for link in links if not (page.parent / link).exists()]
    assert not missing, f"{page.name} links to missing files: {missing}"


IMPORT = re.compile(r"^(?:from \S+ )?import (?:\([^)]*\)|.*)$", flags=re.MULTILINE)


@pytest.mark.parametrize("page", [ROOT / "README.md", ROOT / "docs" / "api.md"],
                         ids=lambda p: p.name)
def test_python_imports_in_examples_work(page: Path):
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)
    statements = [m.group(0) for block in blocks for m in IMPORT.finditer(block)]
    assert statements
    for statement in statements:
        exec(statement, {})  # the documented imports must run

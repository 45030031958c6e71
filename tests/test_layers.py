"""Each package imports only from itself and from packages to its left."""

from __future__ import annotations

import ast
from pathlib import Path

LAYERS = ["core", "io", "data", "preprocess", "sampling", "models", "inference", "train",
          "metrics", "pipeline", "cli"]
PKG = Path(__file__).resolve().parents[1] / "medseg"


def _medseg_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "medseg" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_layers_import_only_leftwards():
    bad = []
    for layer_index, layer in enumerate(LAYERS):
        folder = PKG / layer
        if not folder.is_dir():
            continue
        for py in folder.rglob("*.py"):
            for imported in _medseg_imports(py):
                if imported in LAYERS and LAYERS.index(imported) > layer_index:
                    bad.append(f"{py.relative_to(PKG)} imports medseg.{imported}")
    assert not bad, "layer violations:\n" + "\n".join(bad)


def test_no_unknown_top_level_packages():
    packages = {p.name for p in PKG.iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert packages <= set(LAYERS), packages - set(LAYERS)

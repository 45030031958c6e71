"""Every file medseg writes goes through ``medseg.core.atomic``: a static check of the source.

A write call (``open`` for writing, ``np.save*``, ``torch.save``, ``nib.save``,
``savefig``, ``save_as``, ``sitk.WriteImage``, ``Path.write_text/write_bytes``) must sit
inside a ``with`` block of an atomic context (``atomic_path``, or the cache's
``_fast_path`` built on it), or write into a private temporary folder.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import medseg

PACKAGE = Path(medseg.__file__).parent
ATOMIC_CONTEXTS = {"atomic_path", "_fast_path", "TemporaryDirectory"}
WRITE_FUNCTIONS = {"savez", "savez_compressed", "savefig", "save_as", "WriteImage"}
SAVING_MODULES = {"np", "numpy", "torch", "nib", "nibabel"}  # their ``save`` writes a file
WRITE_METHODS = {"write_text", "write_bytes"}
EXEMPT = {PACKAGE / "core" / "atomic.py"}


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _opens_for_writing(call: ast.Call) -> bool:
    if _name(call.func) != "open" or isinstance(call.func, ast.Attribute):
        return False
    modes = [k.value for k in call.keywords if k.arg == "mode"] + call.args[1:2]
    return any(isinstance(m, ast.Constant) and set(str(m.value)) & set("wax+") for m in modes)


def is_write(call: ast.Call) -> bool:
    name, func = _name(call.func), call.func
    if isinstance(func, ast.Attribute) and name in WRITE_METHODS:
        return True
    if isinstance(func, ast.Attribute) and name == "save":
        return isinstance(func.value, ast.Name) and func.value.id in SAVING_MODULES
    return name in WRITE_FUNCTIONS or _opens_for_writing(call)


def _atomic(node: ast.With | ast.AsyncWith) -> bool:
    return any(isinstance(item.context_expr, ast.Call)
               and _name(item.context_expr.func) in ATOMIC_CONTEXTS for item in node.items)


def unguarded_writes(tree: ast.AST) -> Iterator[ast.Call]:
    """Write calls not lexically inside an atomic ``with`` block."""

    def visit(node: ast.AST, guarded: bool) -> Iterator[ast.Call]:
        if isinstance(node, ast.With | ast.AsyncWith):
            guarded = guarded or _atomic(node)
        if isinstance(node, ast.Call) and is_write(node) and not guarded:
            yield node
        for child in ast.iter_child_nodes(node):
            yield from visit(child, guarded)

    yield from visit(tree, False)


def test_the_checker_sees_unguarded_writes() -> None:
    source = ("def f(p, data):\n    p.write_text('x')\n    with open(p, 'wb') as fh:\n"
              "        fh.write(data)\n    with atomic_path(p) as tmp:\n"
              "        tmp.write_bytes(data)\n        open(tmp, 'w')\n    open(p)\n")
    lines = [call.lineno for call in unguarded_writes(ast.parse(source))]
    assert lines == [2, 3]


def test_every_write_in_medseg_is_atomic() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in EXEMPT:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        offenders += [f"{path.relative_to(PACKAGE.parent)}:{call.lineno}: "
                      f"{ast.unparse(call)[:80]}" for call in unguarded_writes(tree)]
    assert not offenders, "writes outside medseg.core.atomic:\n" + "\n".join(offenders)

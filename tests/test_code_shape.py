"""The package's code stays in reviewable pieces: no function over 60 lines of code and no
module over 650 lines.

A function's length is counted from its ``def`` line to its last line, less its docstring
(a public function's numpy docstring is documentation, not logic to review); nested
functions count on their own and inside the function that holds them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dsketch"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 650


def _docstring_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first.end_lineno - first.lineno + 1  # type: ignore[operator]
    return 0


def function_lengths(source: str) -> list[tuple[str, int]]:
    """``(qualified name, lines of code)`` of every function and method in ``source``."""
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = child.end_lineno - child.lineno + 1 - _docstring_lines(child)  # type: ignore[operator]
                out.append((f"{prefix}{child.name}", lines))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return out


def _modules() -> list[Path]:
    found = sorted(PACKAGE.rglob("*.py"))
    assert len(found) > 10, f"no package sources under {PACKAGE}"
    return found


def test_function_lengths_counts_code_not_docstrings() -> None:
    src = 'class C:\n    def m(self):\n        """Doc\n\n        more."""\n        a = 1\n        return a\n\n\n' \
          'def f():\n    def g():\n        pass\n    return g\n'
    assert function_lengths(src) == [("C.m", 3), ("f", 4), ("f.g", 2)]


def test_no_function_over_the_limit() -> None:
    offenders = []
    for path in _modules():
        rel = path.relative_to(PACKAGE.parent)
        for name, lines in function_lengths(path.read_text(encoding="utf-8")):
            if lines > MAX_FUNCTION_LINES:
                offenders.append(f"{rel}::{name} ({lines} lines)")
    if offenders:
        pytest.fail(f"functions over {MAX_FUNCTION_LINES} lines of code (split them along their seams): "
                    + ", ".join(offenders))


def test_no_module_over_the_limit() -> None:
    offenders = []
    for path in _modules():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            offenders.append(f"{path.relative_to(PACKAGE.parent)} ({lines} lines)")
    if offenders:
        pytest.fail(f"modules over {MAX_MODULE_LINES} lines (move a cohesive part into a sibling module): "
                    + ", ".join(offenders))

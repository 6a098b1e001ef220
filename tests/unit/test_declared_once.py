"""Topic names live in streams/topics.py alone (docstrings aside)."""

from __future__ import annotations

import ast
from pathlib import Path

from mediavec.settings import Settings
from streams.topics import topics

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("streams", "consumers", "schemas", "mediavec")


def _code_strings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (n.lineno, n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]


def test_no_topic_name_is_spelled_outside_the_declarations() -> None:
    names = {s.name for s in topics(Settings()).all()} - {"vectors"}  # "vectors" is also a logical key
    offenders = [
        f"{path.relative_to(REPO)}:{line}: {value!r}"
        for pkg in PACKAGES
        for path in sorted((REPO / pkg).rglob("*.py"))
        if path != REPO / "streams" / "topics.py"
        for line, value in _code_strings(path)
        if any(name in value for name in names)
    ]
    assert not offenders, "topic names belong in streams/topics.py:\n" + "\n".join(offenders)

"""Topic names, stage names and the list of vector spaces are each spelled in one module.

Scanned: every ``.py`` file of every layer package (``tests/unit/test_layers.py``), string
constants only, docstrings left out.

- Topic names live in ``streams/topics.py``: no other string constant contains one.
- Stage names live in ``consumers/registry.py``: no other string constant *is* one. A constant
  that is exactly ``"fetch"`` or ``"sink-qdrant"`` is an identifier (a group id, a CLI argument, a
  metrics label, a default) and must be read from the registry (``FETCH.name``). A sentence that
  mentions a stage (a hint, a log line) is prose for a person, like a docstring, and is allowed.
  One exception: the keys of a dict passed as ``update=`` (pydantic's ``model_copy``) are settings
  sections, ``Settings.fetch`` and ``Settings.embed``, which share the stages' words.
- The vector spaces are listed in ``schemas/spaces.py``: no other tuple, list, set, dict or
  ``Literal[...]`` in code names more than two of them. One or two spaces are a decision about
  those spaces (``row.space == "face"``; "object and text need the detector"); three or more is a
  copy of the list, which goes stale when a space is added. The Avro schema spells the list too,
  as the wire contract must: it is checked equal to ``ALL_SPACES`` instead.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

from consumers.registry import STAGE_NAMES
from mediavec.settings import Settings
from schemas.spaces import ALL_SPACES
from streams.topics import topics
from tests.unit.test_layers import RANK

REPO = Path(__file__).resolve().parents[2]
PACKAGES = tuple(RANK)  # every layer


def _docstrings(tree: ast.AST) -> set[int]:
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def _strings(tree: ast.AST) -> list[ast.Constant]:
    docstrings = _docstrings(tree)
    constants = (n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str))
    return [n for n in constants if id(n) not in docstrings]


def _code_strings(path: Path) -> list[tuple[int, str]]:
    return [(n.lineno, str(n.value)) for n in _strings(ast.parse(path.read_text()))]


def _sources(skip: str) -> Iterator[tuple[str, ast.AST]]:
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            if path != REPO / skip:
                yield str(path.relative_to(REPO)), ast.parse(path.read_text())


def stage_name_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants that are a stage name, settings sections given to ``update=`` aside."""
    sections = {
        id(key)
        for node in ast.walk(tree)
        if isinstance(node, ast.keyword) and node.arg == "update" and isinstance(node.value, ast.Dict)
        for key in node.value.keys
    }
    return [(n.lineno, str(n.value)) for n in _strings(tree) if n.value in STAGE_NAMES and id(n) not in sections]


def space_lists(tree: ast.AST) -> list[tuple[int, list[str]]]:
    """Collection literals (tuple, list, set, dict keys, ``Literal[...]``) naming more than two spaces."""
    found = []
    for node in ast.walk(tree):
        elements = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
        if not isinstance(node, ast.Tuple | ast.List | ast.Set | ast.Dict) or elements is None:
            continue
        named = {str(e.value) for e in elements if isinstance(e, ast.Constant) and e.value in ALL_SPACES}
        if len(named) > 2:
            found.append((node.lineno, sorted(named)))
    return found


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


def test_no_stage_name_is_spelled_outside_the_registry() -> None:
    offenders = [
        f"{path}:{line}: {value!r}"
        for path, tree in _sources("consumers/registry.py")
        for line, value in stage_name_literals(tree)
    ]
    assert not offenders, "stage names belong in consumers/registry.py (read FETCH.name, ...):\n" + "\n".join(offenders)


def test_the_stage_rule_catches_an_identifier_and_spares_prose_and_settings_sections() -> None:
    code = 'group_id(s, "embed"); log("stop sink-qdrant first"); s.model_copy(update={"fetch": f})'
    assert stage_name_literals(ast.parse(code)) == [(1, "embed")]


def test_no_list_of_vector_spaces_outside_schemas_spaces() -> None:
    offenders = [
        f"{path}:{line}: {named}" for path, tree in _sources("schemas/spaces.py") for line, named in space_lists(tree)
    ]
    assert not offenders, "the vector spaces are listed in schemas/spaces.py (ALL_SPACES):\n" + "\n".join(offenders)


def test_the_space_rule_catches_a_copied_list_and_spares_a_decision_about_two() -> None:
    code = 'A = Literal["scene", "object", "grid"]\nif spaces & {"object", "text"}: pass\nB = ("face",)'
    assert space_lists(ast.parse(code)) == [(1, ["grid", "object", "scene"])]


def test_the_avro_schema_lists_the_declared_spaces() -> None:
    schema = json.loads((REPO / "schemas" / "vector_batch" / "v1.avsc").read_text())
    row = next(f["type"]["items"] for f in schema["fields"] if f["name"] == "rows")
    space = next(f["type"] for f in row["fields"] if f["name"] == "space")
    assert tuple(space["symbols"]) == ALL_SPACES

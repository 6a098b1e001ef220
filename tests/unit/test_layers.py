"""The folder tree is the architecture: each top-level package is one layer, imports run downwards.

schemas -> streams -> {media, models, stores} -> consumers -> mediavec, with devstack (the dev
tooling) and loadtest above the application and out of the runtime wheel. Packages of one layer
do not import each other. ARCHITECTURE.md draws the same picture.
"""

from __future__ import annotations

import ast
import tomllib
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAYERS: tuple[tuple[str, ...], ...] = (
    ("schemas",),
    ("streams",),
    ("media", "models", "stores"),
    ("consumers",),
    ("mediavec",),
    ("devstack",),
    ("loadtest",),
)
RANK = {pkg: rank for rank, layer in enumerate(LAYERS) for pkg in layer}
RUNTIME = ("schemas", "streams", "media", "models", "stores", "consumers", "mediavec")


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def edges() -> Counter[tuple[str, str]]:
    """Import statements between top-level packages: (importer, imported) -> count."""
    counts: Counter[tuple[str, str]] = Counter()
    for pkg in RANK:
        for path in (REPO / pkg).rglob("*.py"):
            for _, module in _imports(path):
                top = module.split(".")[0]
                if top in RANK and top != pkg:
                    counts[(pkg, top)] += 1
    return counts


def test_every_import_runs_down_the_layers() -> None:
    upward = [
        f"{path.relative_to(REPO)}:{line}: {pkg} imports {module}"
        for pkg in RANK
        for path in sorted((REPO / pkg).rglob("*.py"))
        for line, module in _imports(path)
        if (top := module.split(".")[0]) in RANK and top != pkg and RANK[top] >= RANK[pkg]
    ]
    assert not upward, "imports must run downwards (tests/unit/test_layers.py):\n" + "\n".join(upward)


def test_the_layers_import_each_other_as_drawn() -> None:
    """The check above can fail: these edges exist (and nothing climbs)."""
    counts = edges()
    for low, high in (
        ("schemas", "streams"),
        ("streams", "consumers"),
        ("stores", "mediavec"),
        ("mediavec", "devstack"),
    ):
        assert counts[(high, low)] > 0 and counts[(low, high)] == 0, (low, high)


def test_the_runtime_wheel_holds_the_runtime_layers_only() -> None:
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert sorted(p.rstrip("*") for p in find["include"]) == sorted(RUNTIME)
    assert {"devstack*", "loadtest*", "tests*"} <= set(find["exclude"])
    # Every top-level package is a declared layer: a new folder has to take its place here.
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    assert packages == set(RANK), packages ^ set(RANK)


def test_the_readme_layout_table_lists_every_layer() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Layout") :].split("\n## ", 1)[0]
    listed = {line.split("`")[1].rstrip("/") for line in table.splitlines() if line.startswith("| `")}
    assert set(RANK) | {"tests"} <= listed, set(RANK) - listed


def test_every_path_the_docs_name_exists() -> None:
    """A file or folder named in backticks in README.md or ARCHITECTURE.md is there (after a move too)."""
    import re

    missing = []
    for doc in ("README.md", "ARCHITECTURE.md"):
        for name in re.findall(r"`([A-Za-z_][\w.-]*/[\w./*-]*)`", (REPO / doc).read_text()):
            top = name.split("/")[0]
            if top in RANK or top in ("tests", "scripts", "k8s", "docs", "deploy"):
                path = name.split("*")[0]
                if not list(REPO.glob(path + "*")):
                    missing.append(f"{doc}: {name}")
    assert not missing, missing

"""The runtime wheel holds the runtime layers and their data files, and no dev tooling.

Built with pip from a copy of the tracked files, as the Docker image builds it (PyPI for the
build backend, as `make setup`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _tracked_copy(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def test_the_runtime_wheel_holds_the_runtime_layers_and_no_dev_tooling(tmp_path: Path) -> None:
    src = _tracked_copy(tmp_path / "src")
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("mediavec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    layers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert tops == {p.rstrip("*") for p in layers["include"]}, tops
    assert not {"devstack", "loadtest", "tests"} & tops
    # The data files the runtime reads come along.
    assert "stores/metadb/migrations/0001_frame_metadata.sql" in names
    assert "schemas/media_request/v1.schema.json" in names and "schemas/vector_batch/v2.avsc" in names
    assert "stores/metadb/migrations/0002_frame_thumbnails.sql" in names
    assert {f"mediavec/service/page/{f}" for f in ("index.html", "app.js", "style.css")} <= set(names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "mediavec = mediavec.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

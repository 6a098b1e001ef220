"""Fixtures of the deployment-file tests: the parsed files and the validators' venv."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.unit.deploy.files import K8S, REPO, Doc, run_script


@pytest.fixture(scope="session")
def validate_venv() -> Path:
    """The validators' venv: built on the first run (PyPI, well under a minute), reused after."""
    done = run_script("--setup")
    if done.returncode != 0:
        pytest.fail(f"could not build the validators' venv:\n{done.stdout}{done.stderr}", pytrace=False)
    return Path(done.stdout.strip())


@pytest.fixture(scope="module")
def compose() -> Doc:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def k8s_docs() -> list[Doc]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs

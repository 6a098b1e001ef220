"""The schema validators (hadolint, the Compose specification, Kubernetes strict schemas and the
vendored KEDA CRDs) accept the repository's files and reject broken copies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.unit.deploy.files import K8S, REPO, Doc, run_script


def test_validators_accept_the_repository_files(validate_venv: Path) -> None:
    done = run_script()
    assert done.returncode == 0, done.stdout + done.stderr
    for what in ("hadolint", "compose spec", "kubernetes"):
        assert re.search(rf"{what} \S+: ok", done.stderr), done.stderr


def _break_compose(tmp: Path, compose: Doc, edit: str) -> Path:
    doc = yaml.safe_load(yaml.safe_dump(compose))
    if edit == "unknown_key":
        doc["services"]["embed"]["shm_sise"] = doc["services"]["embed"].pop("shm_size")
    else:
        doc["services"]["embed"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] = "gpu"
    path = tmp / "docker-compose.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("edit", "expected"), [("unknown_key", "'shm_sise' was unexpected"), ("wrong_type", "is not of type 'array'")]
)
def test_compose_validator_rejects_a_broken_copy(
    validate_venv: Path, compose: Doc, tmp_path: Path, edit: str, expected: str
) -> None:
    done = run_script("--compose", _break_compose(tmp_path, compose, edit))
    assert done.returncode == 1
    assert expected in done.stdout + done.stderr


K8S_BREAKS = {
    # file, (kind, name), edit, expected message
    "builtin_typo": ("fetch.yaml", ("StatefulSet", "fetch"), ("spec", "serviceNam"), "'serviceNam' was unexpected"),
    "unknown_kind": ("fetch.yaml", ("PodDisruptionBudget", "fetch"), ("kind", "PodDisruptionBudgit"), "no schema"),
    "keda_typo": ("keda.yaml", ("ScaledObject", "embed"), ("spec", "maxReplicas"), "'maxReplicas' was unexpected"),
    "keda_metadata": ("keda.yaml", ("ScaledObject", "embed"), ("metadata", "lables"), "'lables' was unexpected"),
    "claim_typo": (
        "sink-encrypted.yaml",
        ("StatefulSet", "sink-encrypted"),
        ("spec", "volumeClaimTemplate"),
        "'volumeClaimTemplate' was unexpected",
    ),
}


@pytest.mark.parametrize("case", sorted(K8S_BREAKS))
def test_k8s_validator_rejects_a_broken_copy(validate_venv: Path, tmp_path: Path, case: str) -> None:
    file, (kind, name), (where, what), expected = K8S_BREAKS[case]
    docs = [d for d in yaml.safe_load_all((K8S / file).read_text()) if d]
    target = next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)
    if where == "kind":
        target["kind"] = what
    else:
        target[where][what] = 1
    (tmp_path / file).write_text(yaml.safe_dump_all(docs))
    done = run_script("--k8s", tmp_path)
    assert done.returncode == 1
    assert expected in done.stdout, done.stdout
    assert f"{len(docs)} documents, 2 failures" in done.stdout  # one per Kubernetes version, one document


def test_dockerfile_linter_rejects_a_broken_copy(validate_venv: Path, tmp_path: Path) -> None:
    text = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["mediavec"]' in text
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace('ENTRYPOINT ["mediavec"]', "ENTRYPOINT mediavec"))
    done = run_script("--dockerfile", broken)
    assert done.returncode == 1
    assert "DL3025" in done.stdout  # exec form for ENTRYPOINT

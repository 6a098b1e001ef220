"""Across all the deployment files: every MEDIAVEC_* name is a setting, no secret value is committed,
and the image installs the project as a non-root user."""

from __future__ import annotations

import re
import tomllib

import pytest

from stores.encindex import IndexKeyError, parse_key
from tests.unit.deploy.files import K8S, REPO, WORKLOADS, Doc, of_kind, pod, setting_env_names


def test_every_mediavec_name_is_a_setting() -> None:
    valid = setting_env_names()
    files = [REPO / "docker-compose.yml", REPO / "Dockerfile", *sorted(K8S.glob("*"))]
    used = {(f.name, n) for f in files for n in re.findall(r"MEDIAVEC_[A-Z0-9_]*[A-Z0-9]", f.read_text())}
    unknown = sorted((f, n) for f, n in used if n not in valid)
    assert not unknown, f"not settings (see streams/settings.py): {unknown}"
    assert len({n for _, n in used}) >= 15  # the scan found the files' names


def test_no_secret_value_is_committed(compose: Doc, k8s_docs: list[Doc]) -> None:
    secrets = of_kind(k8s_docs, "Secret")
    assert {s["metadata"]["name"] for s in secrets} == {
        "mediavec-kafka-sasl",
        "mediavec-qdrant",
        "mediavec-postgres",
        "mediavec-encindex-key",
        "mediavec-search",
    }
    for s in secrets:
        assert "data" not in s, "base64 data hides what is committed: use stringData placeholders"
        assert all("REPLACE_ME" in v for v in s["stringData"].values()), s["metadata"]["name"]
    keys = {(s["metadata"]["name"], k) for s in secrets for k in s["stringData"]}
    refs = [
        e["valueFrom"]["secretKeyRef"]
        for w in of_kind(k8s_docs, *WORKLOADS, "Job")
        for e in w["spec"]["template"]["spec"]["containers"][0].get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    ]
    refs += [r for a in of_kind(k8s_docs, "TriggerAuthentication") for r in a["spec"]["secretTargetRef"]]
    mounted = [v["secret"] for w in of_kind(k8s_docs, *WORKLOADS) for v in pod(w).get("volumes", []) if "secret" in v]
    assert all(m.get("items") for m in mounted), mounted  # name the keys a volume mounts, so they are checked
    refs += [{"name": m["secretName"], "key": item["key"]} for m in mounted for item in m["items"]]
    assert refs and all((r["name"], r["key"]) in keys for r in refs)
    assert ("mediavec-encindex-key", "index.key") in {(r["name"], r["key"]) for r in refs}
    for s in secrets:  # no placeholder is usable as an index key: a forgotten one stops the sink
        for value in s["stringData"].values():
            with pytest.raises(IndexKeyError):
                parse_key(value.encode(), "the template")
    files = (REPO / "Dockerfile", REPO / "docker-compose.yml", *sorted(K8S.glob("*")))
    hex_keys = [
        (f.name, m)
        for f in files
        for m in re.findall(r"(?<!sha256:)(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])", f.read_text())
    ]
    assert not hex_keys, hex_keys  # an index key is 64 hex characters
    credentials = [
        (key, str(value))
        for service in compose["services"].values()
        for key, value in (service.get("environment") or {}).items()
        if re.search(r"PASSWORD|DSN|API_KEY|SECRET|SASL", key)
    ]
    assert credentials and all("${" in value for _, value in credentials), credentials  # from .env, never inline


def test_dockerfile_installs_the_project_as_a_non_root_user(k8s_docs: list[Doc]) -> None:
    lines = (REPO / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    instructions = [line.split(None, 1) for line in lines if line.strip() and not line.startswith("#")]
    froms = [arg for op, arg in instructions if op == "FROM"]
    assert all(f.startswith("python:3.11-slim") for f in froms)
    # The project itself, with the extra that holds sink-encrypted's engine (and only real extras).
    installs = [
        m for op, arg in instructions if op == "RUN" for m in re.findall(r"pip install \"\.\[([\w,-]+)\]\"", arg)
    ]
    assert len(installs) == 1, installs
    extras = set(installs[0].split(","))
    optional = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "encrypted" in extras and extras <= set(optional)
    assert ".[encrypted]" in (K8S / "README.md").read_text()
    user = [arg for op, arg in instructions if op == "USER"][-1]
    uid = int(user.split(":")[0])
    assert uid != 0
    for w in of_kind(k8s_docs, *WORKLOADS, "Job"):
        assert w["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid
    assert [arg for op, arg in instructions if op == "ENTRYPOINT"] == ['["mediavec"]']
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".venv-validate", ".mediavec", "devstack", "loadtest", "tests", "**/*.pt"} <= set(ignored)
    # Every runtime layer the wheel declares is copied into the build and none is ignored.
    layers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {arg.split()[0].rstrip("/") for op, arg in instructions if op == "COPY" and not arg.startswith("--from")}
    assert {layer.rstrip("*") for layer in layers} <= copied and not copied & set(ignored)

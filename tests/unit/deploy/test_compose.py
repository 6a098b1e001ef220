"""docker-compose.yml held to the code: every stage a service, health checks, volumes, a GPU for embed,
settings that parse."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from consumers.registry import STAGE_NAMES as STAGES
from tests.unit.deploy.files import Doc, interpolate, settings_from


def test_compose_runs_every_stage_as_its_own_service(compose: Doc) -> None:
    services = compose["services"]
    for stage in STAGES:
        assert services[stage]["command"][:2] == ["run", stage]
        assert services[stage]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["topics"]["command"] == ["topics"]
    assert services["topics"]["restart"] == "no"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["sink-qdrant"]["depends_on"]["qdrant"]["condition"] == "service_healthy"
    for dependency in ("kafka", "postgres"):
        assert services["sink-postgres"]["depends_on"][dependency]["condition"] == "service_healthy"
    assert services["sink-encrypted"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["demo-media"]["profiles"] == ["demo"]


def test_compose_encrypted_sink_is_one_container_with_its_store_on_a_volume_and_a_key_file(
    compose: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = compose["services"]["sink-encrypted"]
    assert service["deploy"]["replicas"] == 1
    # A fixed instance id: a recreated container takes its static group membership straight back.
    assert service["command"] == ["run", "sink-encrypted", "--instance", "sink-encrypted-0"]
    s = settings_from({k: interpolate(v) for k, v in service["environment"].items()}, monkeypatch)
    volume, models = service["volumes"]  # the store; the query models of an exec'd search (search's comment)
    assert models.endswith(":/models:ro")
    name, target = volume.split(":")
    assert name in compose["volumes"]  # a named volume: the store outlives the container
    assert s.encindex.path is not None and s.encindex.path.is_relative_to(target)
    assert s.data_dir == Path(target)  # the worker and store locks live beside the store
    (secret,) = service["secrets"]
    assert s.encindex.key_file == Path("/run/secrets") / secret
    assert s.encindex.key_env is None
    # The key file is named by a required variable: no default path, so no key in the repository.
    source = compose["secrets"][secret]["file"]
    assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", source), source
    for name, other in compose["services"].items():
        if name != "sink-encrypted":
            assert "secrets" not in other, name
            assert not any(k.startswith("MEDIAVEC_ENCINDEX__") for k in other.get("environment", {})), name


def test_compose_embed_reserves_a_gpu_and_sets_workers_per_gpu(compose: Doc) -> None:
    embed = compose["services"]["embed"]
    devices = embed["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert embed["command"] == ["run", "embed", "--workers-per-gpu", "${EMBED_WORKERS_PER_GPU:-4}"]


def test_compose_services_are_health_checked_with_named_volumes(compose: Doc) -> None:
    services = compose["services"]
    for name in ("kafka", "qdrant", "postgres", "search", *STAGES):
        assert services[name]["healthcheck"]["test"], name
    env = services["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for key in ("OFFSETS_TOPIC", "TRANSACTION_STATE_LOG"):
        assert env[f"KAFKA_{key}_REPLICATION_FACTOR"] == 1
    mounted = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}
    assert {"kafka-data", "qdrant-data", "postgres-data", "encindex-data"} <= mounted
    assert {m for m in mounted if not m.startswith(("$", ".", "/"))} <= set(compose["volumes"])


def test_compose_env_parses_as_settings(compose: Doc, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*STAGES, "topics", "demo-media", "search"):
        env = {k: interpolate(v) for k, v in compose["services"][name]["environment"].items()}
        s = settings_from(env, monkeypatch)
        assert s.kafka.bootstrap_servers == "kafka:9092", name
        assert s.qdrant.url == "http://qdrant:6333"
        assert s.model.model_dir == Path("/models")
        assert s.postgres.dsn is not None and "@postgres:5432/" in s.postgres.dsn.get_secret_value()
        assert s.metrics_port == 9100
    fetch_env = {k: interpolate(v) for k, v in compose["services"]["fetch"]["environment"].items()}
    assert settings_from(fetch_env, monkeypatch).fetch.allow_hosts == ("demo-media",)


def test_compose_demo_script_compiles_and_its_imports_exist(compose: Doc) -> None:
    script = compose["services"]["demo-media"]["command"][0]
    tree = ast.parse(script)  # a syntax error fails here
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert len(imports) >= 5
    for node in imports:
        module = importlib.import_module(node.module or "")
        for alias in node.names:
            assert hasattr(module, alias.name), f"{node.module}.{alias.name}"
    assert "http://demo-media:8080/" in script
    # devstack is not in the runtime image: the service mounts it from the checkout.
    service = compose["services"]["demo-media"]
    assert "./devstack:/opt/mediavec-dev/devstack:ro" in service["volumes"]
    assert "PYTHONPATH=/opt/mediavec-dev" in service["entrypoint"]

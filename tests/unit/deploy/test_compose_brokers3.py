"""compose.brokers3.yaml over docker-compose.yml: three KRaft voters that agree with each other and with
the one-broker service, replication 3 with two in sync, every client bootstrapping from all three.

There is no Compose CLI here, so :func:`merge` applies Compose's merge rules for what the override
uses (mappings merged key by key, a service's volumes by mount path, commands replaced, other
lists appended); the compose specification schema validates the override and the merged result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.deploy.files import REPO, Doc, interpolate, run_script, settings_from

OVERRIDE = REPO / "compose.brokers3.yaml"
REPLACED = frozenset({"command", "entrypoint", "test"})  # Compose overrides these sequences whole
# What differs between nodes; everything else in their environment must be equal.
PER_NODE = frozenset({"KAFKA_NODE_ID", "KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS"})


def merge(base: Any, over: Any, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return {k: merge(base[k], v, k) if k in base else v for k, v in over.items()} | {
            k: v for k, v in base.items() if k not in over
        }
    if isinstance(base, list) and isinstance(over, list) and key not in REPLACED:
        if key == "volumes":  # a service's mounts, unique by target
            targets = {_target(v) for v in over}
            return [v for v in base if _target(v) not in targets] + over
        return base + [v for v in over if v not in base]
    return over


def _target(mount: str) -> str:
    return interpolate(mount).split(":")[1]  # source:target[:mode], the source maybe a ${VARIABLE:-default}


@pytest.fixture(scope="module")
def override() -> Doc:
    return yaml.safe_load(OVERRIDE.read_text())


@pytest.fixture(scope="module")
def cluster(compose: Doc, override: Doc) -> Doc:
    return dict(merge(compose, override))


def nodes(doc: Doc, image: str) -> dict[str, Doc]:
    return {name: s for name, s in doc["services"].items() if s.get("image") == image}


def test_override_and_merged_file_pass_the_compose_schema(validate_venv: Path, cluster: Doc, tmp_path: Path) -> None:
    merged = tmp_path / "docker-compose.yml"
    merged.write_text(yaml.safe_dump(cluster))
    for path in (OVERRIDE, merged):
        done = run_script("--compose", path)
        assert done.returncode == 0, done.stdout + done.stderr


def test_three_kraft_voters_agree_with_the_one_broker_service(compose: Doc, cluster: Doc) -> None:
    image = compose["services"]["kafka"]["image"]
    brokers = nodes(cluster, image)
    assert sorted(brokers) == ["kafka", "kafka-2", "kafka-3"]
    envs = {name: s["environment"] for name, s in brokers.items()}
    voters = {f"{env['KAFKA_NODE_ID']}@{brokers[name]['hostname']}:9093" for name, env in envs.items()}
    assert len(voters) == 3
    shared = {k: v for k, v in envs["kafka"].items() if k not in PER_NODE}
    base_only = set(compose["services"]["kafka"]["environment"]) - PER_NODE
    assert base_only <= set(shared)  # node 1 keeps every setting of the one-broker service
    published = set()
    for name, env in envs.items():
        service, host = brokers[name], brokers[name]["hostname"]
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters, name
        assert {k: v for k, v in env.items() if k not in PER_NODE} == shared, name
        assert service["healthcheck"] == compose["services"]["kafka"]["healthcheck"], name
        (port,) = [int(a.rsplit(":", 1)[1]) for a in env["KAFKA_ADVERTISED_LISTENERS"].split(",") if "HOST://" in a]
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{host}:9092,HOST://127.0.0.1:{port}", name
        assert env["KAFKA_LISTENERS"] == f"PLAINTEXT://:9092,CONTROLLER://:9093,HOST://:{port}", name
        assert f"127.0.0.1:{port}:{port}" in service["ports"], name
        published.add(port)
    assert len(published) == 3
    volumes = [v.split(":")[0] for s in brokers.values() for v in s["volumes"]]
    assert len(set(volumes)) == 3 and set(volumes) <= set(cluster["volumes"])
    assert "kafka-data" not in volumes  # a new cluster never starts on the one broker's metadata


def test_internal_topics_and_defaults_are_replicated_with_two_in_sync(cluster: Doc) -> None:
    env = cluster["services"]["kafka"]["environment"]
    for key in ("OFFSETS_TOPIC", "TRANSACTION_STATE_LOG", "SHARE_COORDINATOR_STATE_TOPIC", "DEFAULT"):
        assert env[f"KAFKA_{key}_REPLICATION_FACTOR"] == 3, key
    for key in ("TRANSACTION_STATE_LOG_MIN_ISR", "SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR", "MIN_INSYNC_REPLICAS"):
        assert env[f"KAFKA_{key}"] == 2, key


def test_every_client_bootstraps_from_all_brokers_and_replicates_its_topics(
    compose: Doc, cluster: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    brokers = nodes(cluster, compose["services"]["kafka"]["image"])
    addresses = {f"{s['hostname']}:9092" for s in brokers.values()}
    broker_env = cluster["services"]["kafka"]["environment"]
    bootstrap = "MEDIAVEC_KAFKA__BOOTSTRAP_SERVERS"
    clients = [n for n, s in compose["services"].items() if bootstrap in s.get("environment", ())]
    assert len(clients) >= 8  # topics, the five stages, search, demo-media
    for name in clients:
        env = {k: interpolate(v) for k, v in cluster["services"][name]["environment"].items()}
        s = settings_from(env, monkeypatch)
        assert set(s.kafka.bootstrap_servers.split(",")) == addresses, name
        assert s.topics.replication_factor == broker_env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == len(brokers), name
        assert s.topics.min_insync_replicas == broker_env["KAFKA_MIN_INSYNC_REPLICAS"], name
    waits = cluster["services"]["topics"]["depends_on"]
    assert all(waits[b]["condition"] == "service_healthy" for b in brokers)  # topics are made on a whole cluster

"""k8s/kafka-cluster.yaml held to the code and to Strimzi's CRDs: a KafkaTopic per declared topic with
its partitions and retention, replication the nodes can hold, the address and login the workers use.

The schema check itself is deploy/validate/k8s_manifests.py with the Strimzi CRDs vendored in
deploy/validate/crds (see SOURCE.md there); here it must reject broken copies."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from streams.topiccheck import topic_config
from streams.topics import topics
from tests.unit.deploy.files import K8S, REPO, Doc, configmap, of_kind, run_script, settings_from

CLUSTER_FILE = K8S / "kafka-cluster.yaml"
CRDS = REPO / "deploy" / "validate" / "crds"
STRIMZI = "kafka.strimzi.io/"


@pytest.fixture(scope="module")
def strimzi() -> list[Doc]:
    return [d for d in yaml.safe_load_all(CLUSTER_FILE.read_text()) if d]


def nodes(docs: list[Doc], role: str = "broker") -> int:
    """How many nodes of the node pools have ``role``."""
    return sum(p["spec"]["replicas"] for p in of_kind(docs, "KafkaNodePool") if role in p["spec"]["roles"])


def test_every_declared_topic_is_a_kafka_topic_with_its_partitions_and_config(
    strimzi: list[Doc], k8s_docs: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from(configmap(k8s_docs), monkeypatch)  # the topics the k8s workers declare
    declared = {s.name: s for s in topics(settings).all()}
    resources = {t["spec"].get("topicName", t["metadata"]["name"]): t for t in of_kind(strimzi, "KafkaTopic")}
    assert resources.keys() == declared.keys()
    (cluster,) = of_kind(strimzi, "Kafka")
    min_isr = cluster["spec"]["kafka"]["config"]["min.insync.replicas"]
    assert settings.topics.min_insync_replicas in (None, min_isr)  # a ConfigMap that sets it agrees
    for name, spec in declared.items():
        topic = resources[name]["spec"]
        assert topic["partitions"] == spec.partitions, name
        assert topic["replicas"] == settings.topics.replication_factor <= nodes(strimzi), name
        config = {k: str(v) for k, v in topic["config"].items()}
        assert config == {**topic_config(settings, spec), "min.insync.replicas": str(min_isr)}, name
        assert 2 <= int(config["min.insync.replicas"]) < topic["replicas"], name  # one replica may be down


def test_cluster_replicates_offsets_and_transactions_on_three_kraft_nodes(
    strimzi: list[Doc], k8s_docs: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    (cluster,) = of_kind(strimzi, "Kafka")
    name, namespace = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
    assert cluster["metadata"]["annotations"] == {"strimzi.io/kraft": "enabled", "strimzi.io/node-pools": "enabled"}
    for doc in strimzi:
        assert doc["apiVersion"] == f"{STRIMZI}v1" and doc["metadata"]["namespace"] == namespace
        if doc["kind"] != "Kafka":
            assert doc["metadata"]["labels"]["strimzi.io/cluster"] == name, doc["metadata"]["name"]
    assert nodes(strimzi, "controller") == nodes(strimzi) == 3  # an odd quorum that survives one node down
    config = cluster["spec"]["kafka"]["config"]
    for key in ("offsets.topic", "transaction.state.log"):
        assert config[f"{key}.replication.factor"] == config["default.replication.factor"] == 3
    assert config["transaction.state.log.min.isr"] == config["min.insync.replicas"] == 2
    assert config["auto.create.topics.enable"] is False
    settings = settings_from(configmap(k8s_docs), monkeypatch)
    assert config["transaction.max.timeout.ms"] >= settings.kafka.transaction_timeout_ms
    assert config["message.max.bytes"] >= max(s.max_message_bytes for s in topics(settings).all())
    assert "topicOperator" in cluster["spec"]["entityOperator"]  # it is what creates the KafkaTopics


def test_workers_reach_the_cluster_through_its_bootstrap_service_as_its_user(
    strimzi: list[Doc], k8s_docs: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    (cluster,) = of_kind(strimzi, "Kafka")
    kafka = settings_from(configmap(k8s_docs), monkeypatch).kafka
    host, port = kafka.bootstrap_servers.rsplit(":", 1)
    meta = cluster["metadata"]
    assert host == f"{meta['name']}-kafka-bootstrap.{meta['namespace']}.svc"  # the Service Strimzi creates
    listeners = [li for li in cluster["spec"]["kafka"]["listeners"] if li["port"] == int(port)]
    assert len(listeners) == 1, f"no listener on the ConfigMap's port {port}"
    listener = listeners[0]
    assert listener["tls"] == kafka.security_protocol.endswith("SSL")
    assert kafka.sasl_mechanism is not None
    assert listener["authentication"]["type"] == kafka.sasl_mechanism.lower()
    (user,) = of_kind(strimzi, "KafkaUser")
    assert user["spec"]["authentication"]["type"] == kafka.sasl_mechanism.lower()


# One broken copy of each Strimzi kind: (kind, name), the path edited, its new value (None: deleted),
# what the validator must say.
BREAKS = {
    "topic_typo": (("KafkaTopic", "media.frames"), ("spec", "partition"), 16, "'partition' was unexpected"),
    "pool_role": (("KafkaNodePool", "dual-role"), ("spec", "roles"), ["broker", "brokers"], "'brokers' is not one of"),
    "kafka_no_listeners": (("Kafka", "kafka"), ("spec", "kafka", "listeners"), None, "'listeners' is a required"),
    "user_auth": (("KafkaUser", "mediavec"), ("spec", "authentication"), {"type": "scram"}, "'scram' is not one of"),
}


def _broken(strimzi: list[Doc], case: str) -> list[Doc]:
    (kind, name), path, value, _ = BREAKS[case]
    docs = copy.deepcopy(strimzi)
    parent = next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)
    for key in path[:-1]:
        parent = parent[key]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return docs


def test_strimzi_crd_schemas_reject_broken_copies(validate_venv: Path, strimzi: list[Doc], tmp_path: Path) -> None:
    for case in BREAKS:  # one file per case, all validated in one run of the script
        (tmp_path / f"{case}.yaml").write_text(yaml.safe_dump_all(_broken(strimzi, case)))
    done = run_script("--k8s", tmp_path)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    for case, (*_, expected) in BREAKS.items():
        errors = [line for line in lines if line.startswith("ERROR") and f"/{case}.yaml " in line]
        assert len(errors) == 2 and all(expected in e for e in errors), (case, errors)  # two Kubernetes versions
    assert f"{len(BREAKS) * len(strimzi)} documents, {len(BREAKS) * 2} failures" in done.stdout


def test_vendored_strimzi_crds_serve_every_kind_used_and_name_their_source(strimzi: list[Doc]) -> None:
    served = set()
    for path in sorted(CRDS.glob("strimzi-*.yaml")):
        crd = yaml.safe_load(path.read_text())
        assert path.name in (CRDS / "SOURCE.md").read_text(), path.name
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        served |= {(f"{group}/{v['name']}", kind) for v in crd["spec"]["versions"] if v["served"]}
    assert {(d["apiVersion"], d["kind"]) for d in strimzi} <= served

"""A three-broker KRaft cluster, started as ``mediavec dev up --brokers 3`` starts it, on ports of its own.

Not the shared test stack: the module brings its own cluster (and the PostgreSQL ``dev up`` brings
with it) up in a data directory of its own, runs the commands the README shows against it, and
purges it at the end. The tests run in order: the last one SIGKILLs a broker.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from devstack import cluster, credentials, kafka, stack, tls
from devstack.procs import pid_alive
from devstack.settings import DevSettings
from streams.kafka import consumer, transactional_producer
from streams.topics import topics
from tests.cluster import BROKERS, running_cluster
from tests.cluster import admin as _admin
from tests.cluster import cli as _cli
from tests.kafkautil import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevSettings]:
    # also purged after a failure; a no-op after test_dev_down_purge_stops_every_node
    with running_cluster(tmp_path_factory.mktemp("cluster")) as settings:
        yield settings


def _broker_config(settings: DevSettings, broker_id: int) -> dict[str, str]:
    resource = ConfigResource(ResourceType.BROKER, str(broker_id))
    client = _admin(settings)  # kept alive until the future resolves
    entries = client.describe_configs([resource])[resource].result(30)
    return {key: entry.value for key, entry in entries.items()}


def _topic_config(settings: DevSettings, topic: str, key: str) -> str:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    client = _admin(settings)
    return str(client.describe_configs([resource])[resource].result(30)[key].value)


def _replicas(settings: DevSettings, topic: str) -> list[tuple[int, int]]:
    """(replicas, in-sync replicas) of each partition, as the cluster's metadata reports them."""
    meta = _admin(settings).list_topics(topic, timeout=30).topics[topic]
    return [(len(p.replicas), len(p.isrs)) for p in meta.partitions.values()]


def test_dev_up_brokers_3_runs_three_voters_with_replicated_defaults(cluster_settings: DevSettings) -> None:
    brokers = _admin(cluster_settings).list_topics(timeout=30).brokers
    base = cluster_settings.devstack.kafka_port
    assert {b.id: b.port for b in brokers.values()} == {1: base, 2: base + 10, 3: base + 20}
    for node in range(BROKERS):
        config = _broker_config(cluster_settings, cluster.node_id(node))
        assert config["controller.quorum.voters"] == cluster.quorum_voters(cluster_settings, BROKERS)
        assert (config["default.replication.factor"], config["min.insync.replicas"]) == ("3", "2")
        assert (config["offsets.topic.replication.factor"], config["transaction.state.log.min.isr"]) == ("3", "2")
    # Every node has the authenticated listeners too: a client that bootstraps on node 0's reaches all three.
    sasl, tls_ = credentials.kafka_sasl_settings(cluster_settings), tls.kafka_tls_settings(cluster_settings)
    for client_settings, offset in ((sasl, 2), (tls_, 3)):
        listed = AdminClient(client_settings.client_config()).list_topics(timeout=30).brokers
        assert sorted(b.port for b in listed.values()) == [base + offset, base + 10 + offset, base + 20 + offset]
    shown = _cli(cluster_settings, "dev", "status")
    assert shown.returncode == 0, shown.stderr
    for node in range(BROKERS):
        assert f"kafka-{node}    running, pid {kafka.pid(cluster_settings, node)}" in shown.stdout


def test_topics_get_three_replicas_two_in_sync_and_so_do_the_internal_ones(cluster_settings: DevSettings) -> None:
    made = _cli(cluster_settings, "topics")
    assert made.returncode == 0, made.stderr
    declared = topics(cluster_settings)
    for spec in declared.all():
        assert _replicas(cluster_settings, spec.name) == [(3, 3)] * spec.partitions, spec.name
        assert _topic_config(cluster_settings, spec.name, "min.insync.replicas") == "2"

    requests = declared.requests.name
    producer = transactional_producer(cluster_settings, f"cluster-test-{uuid.uuid4().hex[:6]}")
    producer.init_transactions(60)
    producer.begin_transaction()
    producer.produce(requests, key=b"k", value=b"first")
    producer.commit_transaction(60)
    reader = consumer(cluster_settings, f"cluster-test-{uuid.uuid4().hex[:6]}")
    try:
        reader.subscribe([requests])
        got = None
        for _ in range(120):
            got = reader.poll(0.5)
            if got is not None and got.error() is None:
                break
        assert got is not None and got.value() == b"first"
        reader.commit(got, asynchronous=False)  # the group's offsets go to __consumer_offsets
    finally:
        reader.close()
    assert _replicas(cluster_settings, "__transaction_state") == [(3, 3)] * 8
    assert _replicas(cluster_settings, "__consumer_offsets") == [(3, 3)] * 8
    assert _topic_config(cluster_settings, "__transaction_state", "min.insync.replicas") == "2"


def test_topics_check_is_clean_then_reports_an_altered_min_insync_replicas(cluster_settings: DevSettings) -> None:
    clean = _cli(cluster_settings, "topics", "--check")
    assert (clean.returncode, clean.stdout.splitlines()[0]) == (0, "no drift: every declared topic is as declared")

    vectors = topics(cluster_settings).vectors.name
    resource = ConfigResource(
        ResourceType.TOPIC,
        vectors,
        incremental_configs=[ConfigEntry("min.insync.replicas", "1", incremental_operation=AlterConfigOpType.SET)],
    )
    client = _admin(cluster_settings)
    client.incremental_alter_configs([resource])[resource].result(30)

    drifted = _cli(cluster_settings, "topics", "--check")
    assert drifted.returncode == 1, drifted.stderr
    assert drifted.stdout.splitlines() == [f"{vectors}: min.insync.replicas is 1, declared 2"]


def test_a_transaction_commits_and_reads_back_with_one_broker_killed(cluster_settings: DevSettings) -> None:
    frames = topics(cluster_settings).frames.name
    leader = _admin(cluster_settings).list_topics(frames, timeout=30).topics[frames].partitions[0].leader
    stack.stop_kafka(cluster_settings, kill=True, node=leader - 1)  # node i is broker i + 1
    assert kafka.pid(cluster_settings, leader - 1) is None

    values = [f"after the kill {i}".encode() for i in range(64)]
    producer = transactional_producer(cluster_settings, f"cluster-kill-{uuid.uuid4().hex[:6]}")
    producer.init_transactions(60)
    producer.begin_transaction()
    for i, value in enumerate(values):
        producer.produce(frames, key=str(i).encode(), value=value, partition=i % 16)
    producer.commit_transaction(60)

    def shrunk() -> bool:  # the broker answering may apply the controller's ISR change a moment later
        meta = _admin(cluster_settings).list_topics(frames, timeout=30).topics[frames]
        return all(leader not in p.isrs and len(p.isrs) == 2 for p in meta.partitions.values())

    wait_for(shrunk, 30, f"broker {leader} to leave every in-sync replica set of {frames}")
    assert sorted(_read_committed(cluster_settings, frames)) == sorted(values)


def _read_committed(settings: DevSettings, topic: str) -> list[bytes]:
    """Everything committed in ``topic``, read by a fresh read_committed group member to each partition's end."""
    group = f"cluster-read-{uuid.uuid4().hex[:6]}"
    reader: Consumer = consumer(settings, group, overrides={"enable.partition.eof": True})
    try:
        partitions = _admin(settings).list_topics(topic, timeout=30).topics[topic].partitions
        reader.assign([TopicPartition(topic, p, 0) for p in partitions])
        pending, out = set(partitions), []
        for _ in range(240):
            msg = reader.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                pending.discard(msg.partition())
                if not pending:
                    break
                continue
            out.append(msg.value())
        assert not pending, f"partitions {sorted(pending)} not read to their end"
        return out
    finally:
        reader.close()


def test_dev_down_purge_stops_every_node(cluster_settings: DevSettings) -> None:
    pids = [kafka.pid(cluster_settings, n) for n in range(BROKERS)]
    down = _cli(cluster_settings, "dev", "down", "--purge")
    assert down.returncode == 0, down.stderr
    assert pids.count(None) == 1  # the one test_a_transaction_commits_and_reads_back_with_one_broker_killed killed
    assert not any(pid_alive(p, kafka.MAIN_CLASS) for p in pids if p is not None)
    assert not stack.status(cluster_settings).running
    assert not (cluster_settings.data_dir / "kafka" / "node-1").exists()
    assert not cluster.record_path(cluster_settings).exists()

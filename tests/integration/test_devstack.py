"""The dev stack is a real Kafka and a real PostgreSQL, configured the way the pipeline needs."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from devstack import kafka, postgres
from devstack.settings import DevSettings, DevStackSettings
from devstack.stack import StackInfo, purge, restart_kafka, status, up
from mediavec.settings import Settings
from streams.settings import KafkaSettings

pytestmark = pytest.mark.integration


def _new_topic(bootstrap: str, partitions: int = 1) -> str:
    name = f"devstack-test.{uuid.uuid4().hex[:10]}"
    client = AdminClient({"bootstrap.servers": bootstrap})  # keep it referenced until the future resolves
    client.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    return name


def _read_committed(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    """Every committed value of partition 0, read until its end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"devstack-test-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "fetch.max.bytes": 32 * 1024 * 1024,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    try:
        for _ in range(200):  # bounded: each poll waits at most 0.5 s
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if len(values) >= expected:
                    break  # partition EOF after the committed records
                continue
            values.append(msg.value() or b"")
    finally:
        consumer.close()
    return values


def _transactional_producer(bootstrap: str) -> Producer:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"devstack-test-{uuid.uuid4().hex[:8]}",
            "transaction.timeout.ms": 600_000,  # above Kafka's 60 s default cap: the broker allows 15 min
            "message.max.bytes": 10 * 1024 * 1024,
        }
    )
    producer.init_transactions(30)
    return producer


def test_broker_commits_transactions_and_hides_aborted_ones(stack: StackInfo) -> None:
    topic = _new_topic(stack.bootstrap_servers)
    producer = _transactional_producer(stack.bootstrap_servers)
    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, value=f"committed-{i}".encode())
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"aborted")
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"committed-3")
    producer.commit_transaction(30)

    assert _read_committed(stack.bootstrap_servers, topic, 4) == [f"committed-{i}".encode() for i in range(4)]


def test_broker_takes_a_frame_sized_message(stack: StackInfo) -> None:
    topic = _new_topic(stack.bootstrap_servers)
    payload = bytes(range(256)) * (9 * 1024 * 4)  # 9 MiB, above the broker's 1 MB default limit
    producer = _transactional_producer(stack.bootstrap_servers)
    producer.begin_transaction()
    producer.produce(topic, value=payload)
    producer.commit_transaction(60)

    assert _read_committed(stack.bootstrap_servers, topic, 1) == [payload]


def test_broker_listens_on_loopback_only(stack: StackInfo) -> None:
    brokers = AdminClient({"bootstrap.servers": stack.bootstrap_servers}).list_topics(timeout=10).brokers
    assert [(b.host, b.port) for b in brokers.values()] == [("127.0.0.1", stack.kafka.port)]


def test_postgres_answers_over_tcp_and_its_socket_lives_in_the_data_dir(
    stack: StackInfo, stack_settings: Settings
) -> None:
    with psycopg.connect(stack.postgres_dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SELECT current_database()").fetchone() == ("mediavec",)

    data = postgres.PostgresPaths.of(stack_settings).data
    socket = data / f".s.PGSQL.{stack.postgres.port}"
    assert stat.S_ISSOCK(socket.stat().st_mode)
    with psycopg.connect(host=str(data), port=stack.postgres.port, dbname="mediavec", user=postgres.SUPERUSER) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_settings_fixture_gets_its_own_database(settings: Settings) -> None:
    assert settings.postgres.dsn is not None
    with psycopg.connect(settings.postgres.dsn.get_secret_value()) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
    assert name is not None and name[0].startswith("t_test_settings_fixture")


def test_up_twice_keeps_the_same_processes(stack: StackInfo, stack_settings: Settings) -> None:
    # Compared with a fresh `up`, not with the session's: the chaos test restarts the broker.
    first = up(stack_settings)
    again = up(stack_settings)
    assert (again.kafka.pid, again.postgres.pid) == (first.kafka.pid, first.postgres.pid)
    assert again.running and first.kafka.pid is not None


def test_status_reports_running_services_and_their_logs(stack: StackInfo, stack_settings: Settings) -> None:
    info = status(stack_settings)
    assert info.running
    assert info.kafka.pid is not None and info.postgres.pid is not None
    assert (info.kafka.port, info.postgres.port) == (29192, 25532)
    assert info.kafka_log.is_file() and info.postgres_log.is_file()
    assert str(info.kafka_log) in info.describe()


def test_restart_kafka_keeps_committed_data(stack: StackInfo, stack_settings: Settings) -> None:
    topic = _new_topic(stack.bootstrap_servers)
    producer = _transactional_producer(stack.bootstrap_servers)
    producer.begin_transaction()
    producer.produce(topic, value=b"before the restart")
    producer.commit_transaction(30)
    before = status(stack_settings).kafka.pid

    after = restart_kafka(stack_settings)

    assert after.kafka.running and after.kafka.pid != before
    assert _read_committed(stack.bootstrap_servers, topic, 1) == [b"before the restart"]


def test_purge_deletes_a_stacks_data_and_a_new_up_starts_clean(tmp_path: Path) -> None:
    """A second, throwaway stack on its own ports: purge leaves the jars and nothing else."""
    dev = DevStackSettings(kafka_port=29292, controller_port=29293, postgres_port=25632)
    settings = DevSettings(
        data_dir=tmp_path, devstack=dev, kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{dev.kafka_port}")
    )
    try:
        info = up(settings)
        topic = _new_topic(info.bootstrap_servers)
        kafka_paths = kafka.KafkaPaths.of(settings)
        pg_root = postgres.PostgresPaths.of(settings).root
        assert kafka_paths.data.is_dir() and pg_root.is_dir()

        gone = purge(settings)
        assert set(gone) >= {kafka_paths.data, kafka_paths.logs, pg_root}
        assert not kafka_paths.data.exists() and not kafka_paths.logs.exists() and not pg_root.exists()
        assert any(kafka_paths.lib.glob("kafka_2.13-*.jar")), "the broker's jars are kept"
        assert not status(settings).running

        again = up(settings)
        topics = AdminClient({"bootstrap.servers": again.bootstrap_servers}).list_topics(timeout=10).topics
        assert topic not in topics, "a purged stack starts with a new, empty cluster"
    finally:
        purge(settings)

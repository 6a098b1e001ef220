"""A three-broker KRaft cluster of a test's own, and what chaos on it needs to know about it.

Shared by tests/integration/test_cluster.py, tests/e2e/test_cluster_chaos.py and
loadtest/chaos_cluster.py. :func:`running_cluster` brings the cluster (and the PostgreSQL
``dev up`` brings with it) up exactly as ``mediavec dev up --brokers 3`` does, on a free block of
ports and in a data directory of the caller's, and purges it afterwards: never the shared test
stack. The rest answers "which broker is it?" for the roles a chaos run kills: the active KRaft
controller (asked of the quorum itself, :func:`active_controller`) and the leader of the
``__transaction_state`` partition that coordinates a transactional id (:func:`txn_coordinator`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import struct
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from confluent_kafka.admin import AdminClient

from devstack import cluster, kafka, stack
from devstack.procs import port_in_use, tail
from devstack.settings import DevSettings, DevStackSettings
from streams.settings import KafkaSettings, TopicSettings

logger = logging.getLogger(__name__)

BROKERS = 3
HEAP = "320m"  # three JVMs on two cores and a CI runner's memory
METADATA_TOPIC = "__cluster_metadata"  # the KRaft quorum's log: one partition, led by the active controller
TXN_TOPIC = "__transaction_state"
# Thousands never chosen, running or not: the default dev stack's 19092.. and the shared test stack's 29192..
RESERVED_THOUSANDS = (19, 29)


def free_base() -> int:
    """A kafka_port whose three nodes' listeners (+0..+23) and PostgreSQL's (+50) are all free.

    Below Linux's ephemeral range (32768 and up): there an outgoing connection, a broker's own to
    its peers included, may take a listener's port between this check and the node's start.
    """
    for _ in range(200):
        base = random.randrange(20000, 32700, 100)
        wanted = [base + 10 * n + k for n in range(BROKERS) for k in range(4)] + [base + 50]
        if base // 1000 not in RESERVED_THOUSANDS and not any(port_in_use(p) for p in wanted):
            return base
    raise RuntimeError("no free block of ports for a three-broker cluster")


def cluster_settings(data_dir: Path, prefix: str, heap: str = HEAP) -> DevSettings:
    """Settings of a three-node stack in ``data_dir`` on free ports: topics replicated 3 times, 2 in sync."""
    base = free_base()
    dev = DevStackSettings(
        kafka_port=base, controller_port=base + 1, postgres_port=base + 50, kafka_heap=heap, brokers=BROKERS
    )
    bootstrap = ",".join(f"127.0.0.1:{base + 10 * n}" for n in range(BROKERS))
    return DevSettings(
        data_dir=data_dir,
        devstack=dev,
        kafka=KafkaSettings(bootstrap_servers=bootstrap, transaction_timeout_ms=60_000),
        topics=TopicSettings(prefix=prefix, replication_factor=3, min_insync_replicas=2),
    )


def cli(settings: DevSettings, *args: str) -> subprocess.CompletedProcess[str]:
    """``mediavec <args>`` in a child process, configured by ``settings`` as a user's shell would be."""
    env = {**os.environ, **settings.to_env()}
    env.pop("MEDIAVEC_DEVSTACK__BROKERS")  # the number of brokers comes from `--brokers` alone
    command = [sys.executable, "-m", "mediavec.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, check=False)


@contextlib.contextmanager
def running_cluster(data_dir: Path, heap: str = HEAP) -> Iterator[DevSettings]:
    """``mediavec dev up --brokers 3`` in ``data_dir``; purged on the way out, also after a failure."""
    settings = cluster_settings(data_dir, f"cluster.{uuid.uuid4().hex[:8]}.", heap)
    up = cli(settings, "dev", "up", "--brokers", str(BROKERS))
    try:
        assert up.returncode == 0, up.stderr[-2000:] + node_errors(settings)  # before the purge deletes the logs
        yield settings
    finally:
        for node in range(BROKERS):  # no controlled shutdown for a cluster about to be deleted
            stack.stop_kafka(settings, kill=True, node=node)
        stack.purge(settings)


def node_errors(settings: DevSettings) -> str:
    """Each node's ERROR lines and JVM output, for a failure message (its logs go with the purge)."""
    out = []
    for node in range(BROKERS):
        paths = kafka.KafkaPaths.of(settings, node)
        errors = [line for line in tail(paths.server_log, 400).splitlines() if " ERROR " in line]
        out.append(f"\n-- node {node}: " + "\n".join(errors[-5:]) + "\n" + tail(paths.stdout_log, 5))
    return "".join(out)


def admin(settings: DevSettings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})


def node_of(broker_id: int) -> int:
    """The devstack node (0-based) that runs broker ``broker_id``."""
    return next(n for n in range(BROKERS) if cluster.node_id(n) == broker_id)


# -- the active controller: DescribeQuorum, asked of a broker, which forwards it to the quorum -------------

DESCRIBE_QUORUM = 55  # API key; version 0 is already a "flexible" (tagged-field) version


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _describe_quorum_request(correlation: int) -> bytes:
    client = b"mediavec-tests"
    header = struct.pack(">hhih", DESCRIBE_QUORUM, 0, correlation, len(client)) + client + b"\x00"
    name = METADATA_TOPIC.encode()
    partitions = _uvarint(2) + struct.pack(">i", 0) + b"\x00"  # one partition (compact array: n + 1)
    body = _uvarint(2) + _uvarint(len(name) + 1) + name + partitions + b"\x00" + b"\x00"
    frame = header + body
    return struct.pack(">i", len(frame)) + frame


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data


def _quorum_leader(response: bytes) -> int:
    """LeaderId of the one partition in a DescribeQuorum v0 response (after the size prefix)."""
    pos = 4  # correlation id
    _, pos = _read_uvarint(response, pos)  # header tagged fields (zero of them)
    (error,) = struct.unpack_from(">h", response, pos)
    if error:
        raise RuntimeError(f"DescribeQuorum failed with error code {error}")
    _, pos = _read_uvarint(response, pos + 2)  # topics
    name_len, pos = _read_uvarint(response, pos)
    _, pos = _read_uvarint(response, pos + name_len - 1)  # partitions
    _, part_error, leader = struct.unpack_from(">ihi", response, pos)
    if part_error:
        raise RuntimeError(f"DescribeQuorum of {METADATA_TOPIC} failed with error code {part_error}")
    return int(leader)


def active_controller(settings: DevSettings, timeout_s: float = 5.0) -> int:
    """The node id of the KRaft quorum's leader, the active controller, as the quorum reports it.

    confluent-kafka has no describe_metadata_quorum, and ``describe_cluster().controller`` is, in
    KRaft, a random live broker, not the controller: so this sends the DescribeQuorum request
    (what ``kafka-metadata-quorum describe --status`` sends) to the first broker that answers.
    """
    errors = []
    for n, address in enumerate(settings.kafka.bootstrap_servers.split(",")):
        host, port = address.strip().rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
                sock.sendall(_describe_quorum_request(n + 1))
                (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
                return _quorum_leader(_recv_exactly(sock, size))
        except (OSError, RuntimeError) as exc:  # that broker is down or the quorum is electing
            errors.append(f"{address}: {exc}")
    raise RuntimeError(f"no broker told the active controller: {'; '.join(errors)}")


# -- the transaction coordinator of a transactional id -------------------------------------------------


def java_string_hash(text: str) -> int:
    """``String.hashCode()`` of Java: over UTF-16 code units, wrapping at 32 bits, signed."""
    h = 0
    units = text.encode("utf-16-be")
    for i in range(0, len(units), 2):
        h = (31 * h + int.from_bytes(units[i : i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def txn_partition(transactional_id: str, partitions: int) -> int:
    """The ``__transaction_state`` partition of ``transactional_id``: Kafka's ``Utils.abs(hashCode) % n``."""
    h = java_string_hash(transactional_id)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


def txn_coordinator(settings: DevSettings, transactional_id: str) -> int:
    """The broker id leading the transaction-state partition that coordinates ``transactional_id``."""
    meta = admin(settings).list_topics(TXN_TOPIC, timeout=30).topics[TXN_TOPIC]
    leader = meta.partitions[txn_partition(transactional_id, len(meta.partitions))].leader
    if leader < 0:
        raise RuntimeError(f"{TXN_TOPIC} partition of {transactional_id!r} has no leader now")
    return int(leader)


def all_in_sync(settings: DevSettings) -> bool:
    """Whether every partition of every topic, internal ones included, has all its replicas in sync."""
    listed = admin(settings).list_topics(timeout=30).topics
    return all(len(p.isrs) == len(p.replicas) for t in listed.values() for p in t.partitions.values())

"""The shape of the dev stack's Kafka: how many KRaft nodes, their ids, ports and shared cluster id.

``mediavec dev up --brokers N`` (``MEDIAVEC_DEVSTACK__BROKERS``) runs N nodes on 127.0.0.1, each a
combined broker and controller, so the controller quorum has N voters. Node ``i`` listens on node
0's ports plus ``10 * i`` (PLAINTEXT ``kafka_port``, CONTROLLER ``controller_port``, SASL_PLAINTEXT
``kafka_port + 2``, SASL_SSL ``kafka_port + 3``); node 0 is the single-node stack's broker, in the
same place with the same configuration, so ``--brokers 1`` is the stack as it always was.

Every node must be formatted with one cluster id, and storage formatted for N voters cannot
serve M: ``<data_dir>/kafka/cluster.json`` records both when node 0 is formatted, so ``up`` with
another count fails in one line and ``status`` / ``down`` find every node without being told N.
This module only computes and records; :mod:`devstack.kafka` runs the nodes.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from devstack.procs import DevStackError
from devstack.settings import DevSettings

NODE_STRIDE = 10  # port distance between two nodes: room for node 0's four listeners
SASL_OFFSET = 2  # SASL_PLAINTEXT listener: kafka_port + 2
TLS_OFFSET = 3  # SASL_SSL listener: kafka_port + 3
MAX_REPLICATION = 3  # what the internal topics ask for once there are enough brokers


@dataclass(frozen=True)
class NodePorts:
    plaintext: int
    controller: int
    sasl: int
    tls: int

    def as_dict(self) -> dict[str, int]:
        return {
            "kafka_port": self.plaintext,
            "controller_port": self.controller,
            "SASL listener (kafka_port + 2)": self.sasl,
            "TLS listener (kafka_port + 3)": self.tls,
        }


@dataclass(frozen=True)
class Layout:
    """What node 0's storage was formatted for: the cluster id every node shares, and the voters."""

    brokers: int
    cluster_id: str


def node_id(node: int) -> int:
    """KRaft ``node.id`` of node ``node`` (0-based); node 0 keeps the single node's id 1."""
    return node + 1


def ports(settings: DevSettings, node: int = 0) -> NodePorts:
    step = NODE_STRIDE * node
    dev = settings.devstack
    return NodePorts(
        dev.kafka_port + step,
        dev.controller_port + step,
        dev.kafka_port + SASL_OFFSET + step,
        dev.kafka_port + TLS_OFFSET + step,
    )


def quorum_voters(settings: DevSettings, brokers: int) -> str:
    return ",".join(f"{node_id(n)}@127.0.0.1:{ports(settings, n).controller}" for n in range(brokers))


def replication_props(brokers: int) -> dict[str, object]:
    """Replication of the internal topics and the default for new ones: 3 copies, 2 in sync.

    With fewer brokers, as many copies as there are brokers, and one fewer in sync (never under 1),
    so a cluster of N >= 2 survives losing one broker and a single node stays what it was.
    """
    replicas = min(brokers, MAX_REPLICATION)
    in_sync = max(1, replicas - 1)
    return {
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": in_sync,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": in_sync,
        "min.insync.replicas": in_sync,
        "default.replication.factor": replicas,
    }


def _addresses(host: str, port_of: dict[int, int]) -> str:
    return ",".join(f"{host}:{port}" for port in port_of.values())


def bootstrap_servers(settings: DevSettings, listener: str = "plaintext") -> str:
    """Every node's address on one listener (``plaintext``, ``sasl`` or ``tls``), comma-separated."""
    port_of = {n: getattr(ports(settings, n), listener) for n in range(size(settings))}
    return _addresses(settings.devstack.kafka_host, port_of)


def record_path(settings: DevSettings) -> Path:
    return settings.data_dir.resolve() / "kafka" / "cluster.json"


def _node0_meta(settings: DevSettings) -> Path:
    return settings.data_dir.resolve() / "kafka" / "data" / "meta.properties"


def recorded(settings: DevSettings) -> Layout | None:
    """The layout node 0's storage was formatted for; None before it is formatted.

    Storage formatted before this record existed was a single node's: its cluster id is read
    from ``meta.properties``.
    """
    path = record_path(settings)
    if path.exists():
        data = json.loads(path.read_text())
        return Layout(int(data["brokers"]), str(data["cluster_id"]))
    meta = _node0_meta(settings)
    if meta.exists():
        props = dict(line.split("=", 1) for line in meta.read_text().splitlines() if "=" in line)
        return Layout(1, props.get("cluster.id", "").strip())
    return None


def size(settings: DevSettings) -> int:
    """How many nodes this stack has: what its storage was formatted for, else what settings ask."""
    layout = recorded(settings)
    return layout.brokers if layout is not None else settings.devstack.brokers


def nodes(settings: DevSettings) -> range:
    return range(size(settings))


def on_disk(settings: DevSettings) -> list[int]:
    """Every node this stack has, and any other whose folder is there: what ``down`` must stop."""
    found = {int(d.name.removeprefix("node-")) for d in record_path(settings).parent.glob("node-[0-9]")}
    return sorted(found.union(nodes(settings)))


def claim(settings: DevSettings) -> Layout:
    """The layout to start: the recorded one, or a new one for ``settings.devstack.brokers`` nodes.

    Fails when the storage on disk was formatted for another number of nodes.
    """
    wanted = settings.devstack.brokers
    layout = recorded(settings)
    if layout is None:
        layout = Layout(wanted, _cluster_id())
        path = record_path(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"brokers": layout.brokers, "cluster_id": layout.cluster_id}) + "\n")
    if layout.brokers != wanted:
        raise DevStackError(
            f"the Kafka storage in {record_path(settings).parent} was formatted for {layout.brokers} broker(s), "
            f"not {wanted}; start it with --brokers {layout.brokers}, or delete its data first "
            "with `mediavec dev down --purge`"
        )
    return layout


def _cluster_id() -> str:
    """A Kafka-style cluster id: 16 random bytes, URL-safe base64, not starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid

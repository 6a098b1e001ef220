"""The local dev stack as one thing: bring it up, report on it, take it down.

``up`` is idempotent (a running stack is only reported on, except that a broker started from an
older ``server.properties`` is restarted with the current one) and the services it starts outlive
the Python process that started them; ``down`` stops them through their PID files. Every call
holds ``<data_dir>/devstack.lock`` so two processes working on one stack take turns.

Kafka is one KRaft node, or ``brokers`` of them as one cluster (``mediavec dev up --brokers 3``,
:mod:`devstack.cluster`); ``status``, ``down`` and ``purge`` find every node of the stack's
storage without being told how many.

Besides the open PLAINTEXT listener the broker has SASL_PLAINTEXT and SASL_SSL ones (PLAIN,
SCRAM-SHA-512; TLS with a certificate from the stack's own CA, where OAUTHBEARER with the stack's
OIDC issuer works too) and PostgreSQL a password-checked role; :mod:`devstack.credentials`,
:mod:`devstack.tls` and :mod:`devstack.oidc` give clients settings for them. No
credential is ever part of a :class:`StackInfo` or of what it prints.

``up(with_registry=True)`` (``mediavec dev up --registry``) adds a schema registry with the
Confluent-compatible API, its schemas kept in the stack's Kafka (:mod:`devstack.registry`).
"""

from __future__ import annotations

import logging
import shutil
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devstack import cluster, credentials, kafka, postgres, registry, tls
from devstack.procs import file_lock
from devstack.settings import DevSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    port: int
    log_path: Path


@dataclass(frozen=True)
class StackInfo:
    """Where the stack's services are and whether they run."""

    data_dir: Path
    bootstrap_servers: str
    postgres_dsn: str
    kafka: ServiceStatus
    postgres: ServiceStatus
    sasl_bootstrap_servers: str = ""  # SASL_PLAINTEXT listener: PLAIN and SCRAM-SHA-512
    credentials_file: Path | None = None  # where the generated passwords are (0600); never their content
    tls_bootstrap_servers: str = ""  # SASL_SSL listener, a certificate from the stack's own CA
    tls_ca_file: Path | None = None  # what TLS clients trust (MEDIAVEC_KAFKA__SSL_CA_LOCATION)
    kafka_nodes: tuple[ServiceStatus, ...] = ()  # every node, node 0 (``kafka``) first
    registry: ServiceStatus | None = None  # the schema registry, once started (``up(with_registry=True)``)
    registry_url: str = ""  # its Confluent-compatible API (``schema.registry.url``)

    @property
    def running(self) -> bool:
        return all(node.running for node in self.kafka_nodes or (self.kafka,)) and self.postgres.running

    @property
    def kafka_log(self) -> Path:
        return self.kafka.log_path

    @property
    def postgres_log(self) -> Path:
        return self.postgres.log_path

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["running"] = self.running
        return out

    def describe(self) -> str:
        """A few lines for people: what runs where, and where its logs are."""
        lines = [f"dev stack in {self.data_dir}: {'running' if self.running else 'not running'}"]
        if len(self.kafka_nodes) > 1:
            lines.append(f"  {'kafka':<10} {f'{len(self.kafka_nodes)} KRaft nodes':<20} {self.bootstrap_servers}")
            services = [(node, f"127.0.0.1:{node.port}") for node in self.kafka_nodes]
        else:
            services = [(self.kafka, self.bootstrap_servers)]
        if self.registry is not None:
            services.append((self.registry, self.registry_url))
        for svc, address in (*services, (self.postgres, self.postgres_dsn)):
            state = f"running, pid {svc.pid}" if svc.running else "stopped"
            lines.append(f"  {svc.name:<10} {state:<20} {address}")
            lines.append(f"  {'':<10} log: {svc.log_path}")
        if self.sasl_bootstrap_servers:
            mechanisms = ", ".join(kafka.SASL_MECHANISMS)
            lines.append(f"  {'kafka sasl':<10} {'SASL_PLAINTEXT':<20} {self.sasl_bootstrap_servers} ({mechanisms})")
        if self.tls_bootstrap_servers:
            lines.append(f"  {'kafka tls':<10} {'SASL_SSL':<20} {self.tls_bootstrap_servers} (CA: {self.tls_ca_file})")
            mechanisms = ", ".join(kafka.TLS_MECHANISMS)
            lines.append(f"  {'':<10} {mechanisms}; OIDC tokens: python -m devstack.oidc")
        if self.credentials_file is not None:
            lines.append(f"  {'':<10} users {credentials.KAFKA_USER!r} (Kafka), {postgres.APP_ROLE!r} (PostgreSQL)")
            lines.append(f"  {'':<10} passwords in {self.credentials_file}")
        return "\n".join(lines)


def _node_status(settings: DevSettings, node: int, name: str) -> ServiceStatus:
    node_pid = kafka.pid(settings, node)
    port = cluster.ports(settings, node).plaintext
    return ServiceStatus(name, node_pid is not None, node_pid, port, kafka.KafkaPaths.of(settings, node).server_log)


def status(settings: DevSettings) -> StackInfo:
    """Report on the stack without changing it."""
    pg_pid = postgres.pid(settings)
    names = ["kafka"] if cluster.size(settings) == 1 else [f"kafka-{n}" for n in cluster.nodes(settings)]
    nodes = tuple(_node_status(settings, n, name) for n, name in enumerate(names))
    return StackInfo(
        data_dir=settings.data_dir.resolve(),
        bootstrap_servers=kafka.bootstrap_servers(settings),
        postgres_dsn=postgres.dsn(settings),
        kafka=nodes[0],
        postgres=ServiceStatus(
            "postgres",
            pg_pid is not None,
            pg_pid,
            settings.devstack.postgres_port,
            postgres.PostgresPaths.of(settings).log_file,
        ),
        sasl_bootstrap_servers=cluster.bootstrap_servers(settings, "sasl"),
        credentials_file=credentials.path(settings),
        tls_bootstrap_servers=cluster.bootstrap_servers(settings, "tls"),
        tls_ca_file=tls.TlsFiles.of(settings).ca_cert,
        kafka_nodes=nodes,
        registry=_registry_status(settings),
        registry_url=registry.ccompat_url(settings),
    )


def _registry_status(settings: DevSettings) -> ServiceStatus | None:
    """The registry's state, or None where it was never started (or was stopped by ``down``)."""
    paths = registry.RegistryPaths.of(settings)
    if not paths.pid_file.exists():
        return None
    reg_pid = registry.pid(settings)
    return ServiceStatus("registry", reg_pid is not None, reg_pid, settings.devstack.registry_port, paths.log)


def _lock(settings: DevSettings) -> AbstractContextManager[None]:
    return file_lock(settings.data_dir.resolve() / "devstack.lock")


def up(settings: DevSettings, timeout_s: float = 180.0, with_registry: bool = False) -> StackInfo:
    """Start whatever is not running and wait until every service answers.

    ``with_registry`` adds the schema registry (:mod:`devstack.registry`), started once Kafka
    answers since it keeps its schemas there. Fails, changing nothing, when Kafka's storage was
    formatted for another number of nodes.
    """
    with _lock(settings):
        cluster.claim(settings)
        _restart_stale_kafka(settings, timeout_s)
        for node in cluster.nodes(settings):  # the JVMs boot in the background while PostgreSQL starts
            kafka.start(settings, node)
        postgres.start(settings, timeout_s)
        postgres.wait_ready(settings, timeout_s)
        kafka.wait_ready(settings, timeout_s)
        if with_registry:
            registry.start(settings)
            registry.wait_ready(settings, timeout_s)
        return status(settings)


def _restart_stale_kafka(settings: DevSettings, timeout_s: float) -> None:
    """Stop running nodes whose configuration is not the current one, so ``start`` renews them.

    This happens once after an upgrade (a broker without the SASL listener, say); clients
    reconnect as they do after any broker restart.
    """
    stale = [n for n in cluster.nodes(settings) if kafka.pid(settings, n) and not kafka.config_current(settings, n)]
    if stale:
        logger.warning("Kafka node(s) %s run with an outdated server.properties; restarting them", stale)
        kafka.stop(settings, timeout_s, nodes=stale)


def down(settings: DevSettings, timeout_s: float = 60.0) -> StackInfo:
    """Stop every service (data is kept); a stopped stack is left as it is."""
    with _lock(settings):
        registry.stop(settings, timeout_s)  # before Kafka, which it would keep retrying
        kafka.stop(settings, timeout_s, nodes=cluster.on_disk(settings))
        postgres.stop(settings, timeout_s)
        return status(settings)


def purge(settings: DevSettings, timeout_s: float = 60.0) -> list[Path]:
    """Stop every service and delete their data and logs; returns what was deleted.

    The broker's jars stay (the next ``up`` formats fresh storage and initialises a new cluster,
    of any number of nodes, without resolving them again), so do the registry's application and
    the credentials file. The registry's schemas go with Kafka's data. A test session's stack and
    ``mediavec dev down --purge`` end here, so repeated runs do not fill the disk.
    """
    with _lock(settings):
        nodes = cluster.on_disk(settings)
        registry.stop(settings, timeout_s)
        kafka.stop(settings, timeout_s, nodes=nodes)
        postgres.stop(settings, timeout_s)
        k = kafka.KafkaPaths.of(settings)
        r = registry.RegistryPaths.of(settings)
        others = [kafka.KafkaPaths.of(settings, n).root for n in nodes if n > 0]
        candidates = (k.data, k.logs, k.config, *others, cluster.record_path(settings), r.logs, r.snapshots)
        gone = [path for path in (*candidates, postgres.PostgresPaths.of(settings).root) if path.exists()]
        for path in gone:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        return gone


def stop_kafka(settings: DevSettings, kill: bool = False, timeout_s: float = 60.0, node: int = 0) -> None:
    """Stop only one Kafka node (node 0: the single broker); ``kill=True`` SIGKILLs it, as a crash would."""
    with _lock(settings):
        kafka.stop(settings, timeout_s, kill=kill, nodes=(node,))


def start_kafka(settings: DevSettings, timeout_s: float = 180.0, node: int = 0) -> StackInfo:
    """Start one Kafka node (after :func:`stop_kafka`) and wait until every node is a broker again."""
    with _lock(settings):
        kafka.start(settings, node)
        kafka.wait_ready(settings, timeout_s)
        return status(settings)


def restart_kafka(settings: DevSettings, kill: bool = False, timeout_s: float = 180.0, node: int = 0) -> StackInfo:
    """Stop and start one Kafka node, keeping its data, and wait until the cluster answers again."""
    stop_kafka(settings, kill=kill, node=node)
    return start_kafka(settings, timeout_s, node=node)

"""Real Apache Kafka 4 KRaft nodes (broker and controller in one JVM each) for local runs.

One node by default; ``brokers`` of them as one cluster (:mod:`devstack.cluster`: ids, ports,
the shared cluster id). The jars come from Maven Central through ``pom.xml`` beside this file;
everything node 0 writes (config, data, logs, PID file) lives under ``<data_dir>/kafka/``, node
``i``'s under ``<data_dir>/kafka/node-<i>/``, and the jars in ``<data_dir>/kafka/lib`` serve all.
Node 0 listens on 127.0.0.1 only (``kafka_host`` puts the client listeners on another of this
machine's addresses, as for workers on several hosts): PLAINTEXT on ``kafka_port`` (what the
pipeline uses by default), SASL_PLAINTEXT on ``kafka_port + 2`` and SASL_SSL on ``kafka_port + 3``
(a certificate from the stack's own CA, :mod:`devstack.tls`), both with PLAIN and SCRAM-SHA-512, for one user
whose generated password lives in :mod:`devstack.credentials`. The PLAIN user is declared in the
listener's JAAS config (so ``server.properties`` is written 0600); the SCRAM credential is
upserted through the admin API once the broker answers, which works on storage formatted before
the listener existed. The SASL_SSL listener also takes OAUTHBEARER: JWTs from the stack's own
OIDC issuer (:mod:`devstack.oidc`), checked against its JWKS file, issuer and audience. Node
``i`` has the same listeners ``10 * i`` ports higher: a client that bootstraps on any listener
reaches every broker on that listener.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from devstack import cluster, credentials, oidc, tls
from devstack.procs import (
    DevStackError,
    port_open,
    require_free_ports,
    running_pid,
    spawn,
    stop_pid,
    tail,
    wait_for,
)
from devstack.settings import DevSettings

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOG4J_CONFIG = HERE / "log4j2.xml"
MAIN_CLASS = "kafka.Kafka"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # frames carry JPEGs up to 8 MiB, plus headroom
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-512")
TLS_MECHANISMS = (*SASL_MECHANISMS, "OAUTHBEARER")  # OIDC tokens only over TLS
SCRAM_ITERATIONS = 8192


@dataclass(frozen=True)
class KafkaPaths:
    root: Path
    lib: Path
    data: Path
    logs: Path
    config: Path
    pid_file: Path

    @classmethod
    def of(cls, settings: DevSettings, node: int = 0) -> KafkaPaths:
        """Node 0's files where the single node's always were; node ``i``'s in ``node-<i>/``."""
        base = settings.data_dir.resolve() / "kafka"
        root = base if node == 0 else base / f"node-{node}"
        return cls(
            root=root,
            lib=base / "lib",
            data=root / "data",
            logs=root / "logs",
            config=root / "server.properties",
            pid_file=root / "kafka.pid",
        )

    @property
    def server_log(self) -> Path:
        return self.logs / "server.log"

    @property
    def stdout_log(self) -> Path:
        """JVM output from before Log4j starts (bad flags, missing classes, out of memory)."""
        return self.logs / "kafka.out"


def bootstrap_servers(settings: DevSettings) -> str:
    """Every node's PLAINTEXT address, so a client starts even while one node is down."""
    return cluster.bootstrap_servers(settings)


def resolve_jars(settings: DevSettings) -> Path:
    """Copy the broker's runtime jars into ``<data_dir>/kafka/lib`` with Maven, once per pom.xml."""
    lib = KafkaPaths.of(settings).lib
    stamp = lib / ".pom.sha256"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == digest and any(lib.glob("kafka_2.13-*.jar")):
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevStackError("Maven (mvn) is needed to fetch the Kafka jars; run scripts/setup.sh or install maven")
    lib.mkdir(parents=True, exist_ok=True)
    for old in lib.glob("*.jar"):  # a changed pom must not leave two versions on the classpath
        old.unlink()
    cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies"]
    cmd += [f"-DoutputDirectory={lib}", "-DincludeScope=runtime"]
    logger.info("resolving Kafka jars into %s", lib)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DevStackError(
            f"mvn could not resolve the Kafka jars (exit {done.returncode}):\n{done.stdout}{done.stderr}"
        )
    stamp.write_text(digest + "\n")
    return lib


def _listener_props(settings: DevSettings, node: int) -> dict[str, object]:
    """PLAINTEXT (clients, inter-broker), SASL_PLAINTEXT and SASL_SSL (authenticated clients), CONTROLLER."""
    port, host = cluster.ports(settings, node), settings.devstack.kafka_host
    client_listeners = (
        f"PLAINTEXT://{host}:{port.plaintext},SASL_PLAINTEXT://{host}:{port.sasl},SASL_SSL://{host}:{port.tls}"
    )
    props: dict[str, object] = {
        "listeners": f"{client_listeners},CONTROLLER://127.0.0.1:{port.controller}",
        "advertised.listeners": client_listeners,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": (
            "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
        ),
        "sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
    }
    for listener in ("sasl_plaintext", "sasl_ssl"):
        props.update(_sasl_props(settings, f"listener.name.{listener}"))
    files = tls.ensure(settings)
    props["listener.name.sasl_ssl.ssl.keystore.type"] = "PEM"
    props["listener.name.sasl_ssl.ssl.keystore.location"] = files.broker_pem
    props.update(_oauthbearer_props(settings, "listener.name.sasl_ssl"))
    return props


def _oauthbearer_props(settings: DevSettings, prefix: str) -> dict[str, object]:
    """OAUTHBEARER on the TLS listener: JWTs from the stack's issuer, checked against its JWKS file."""
    issuer = oidc.ensure(settings)
    return {
        f"{prefix}.sasl.enabled.mechanisms": ",".join(TLS_MECHANISMS),
        f"{prefix}.oauthbearer.sasl.jaas.config": (
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;"
        ),
        f"{prefix}.oauthbearer.sasl.server.callback.handler.class": (
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler"
        ),
        # Kafka 4.1's default (DefaultJwtValidator, made without a key resolver) falls back to the
        # client-side validator, which does not check signatures: name the broker's one.
        "sasl.oauthbearer.jwt.validator.class": "org.apache.kafka.common.security.oauthbearer.BrokerJwtValidator",
        "sasl.oauthbearer.jwks.endpoint.url": issuer.jwks_url,
        "sasl.oauthbearer.expected.audience": oidc.AUDIENCE,
        "sasl.oauthbearer.expected.issuer": oidc.ISSUER,
    }


def _sasl_props(settings: DevSettings, prefix: str) -> dict[str, object]:
    creds = credentials.load_or_create(settings)
    user, password = creds.kafka_user, creds.kafka_password.get_secret_value()
    return {
        f"{prefix}.sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
        f"{prefix}.plain.sasl.jaas.config": (
            f'org.apache.kafka.common.security.plain.PlainLoginModule required user_{user}="{password}";'
        ),
        f"{prefix}.scram-sha-512.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    }


def server_properties(settings: DevSettings, node: int = 0) -> str:
    """Node ``node``'s configuration: loopback only, one of ``brokers`` voters, replication to match.

    It holds the PLAIN user's password: write it only through :func:`write_config` (mode 0600).
    """
    brokers = settings.devstack.brokers
    replication = cluster.replication_props(brokers)
    props = {
        "process.roles": "broker,controller",
        "node.id": cluster.node_id(node),
        "controller.quorum.voters": cluster.quorum_voters(settings, brokers),
        **_listener_props(settings, node),
        "log.dirs": KafkaPaths.of(settings, node).data,
        "num.partitions": 1,
        "auto.create.topics.enable": "false",
        # Listed here again by ``replication``, which keeps this place: a running node's file must
        # stay byte-identical to what older code wrote, or ``dev up`` restarts it as stale.
        "offsets.topic.replication.factor": replication["offsets.topic.replication.factor"],
        # Fewer internal partitions than the default 50: a small stack, and a faster first start.
        "offsets.topic.num.partitions": 8,
        "transaction.state.log.num.partitions": 8,
        **replication,
        "group.initial.rebalance.delay.ms": 0,
        # Long GPU batches run inside transactions; clients may ask for up to 15 minutes.
        "transaction.max.timeout.ms": 900_000,
        "message.max.bytes": MAX_MESSAGE_BYTES,
        "replica.fetch.max.bytes": MAX_MESSAGE_BYTES,
        "log.retention.check.interval.ms": 300_000,
    }
    lines = ["# Written by devstack.kafka on every start; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def write_config(settings: DevSettings, node: int = 0) -> None:
    """Write ``server.properties`` readable by its owner only: it holds a password."""
    credentials.write_private(KafkaPaths.of(settings, node).config, server_properties(settings, node))


def config_current(settings: DevSettings, node: int = 0) -> bool:
    """Whether node ``node``'s ``server.properties`` on disk is what this code would write now.

    A broker started by an older version (without the SASL listener, say) runs a stale one.
    """
    config = KafkaPaths.of(settings, node).config
    return config.exists() and config.read_text() == server_properties(settings, node)


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise DevStackError("java (17 or newer) is needed to run Kafka; run scripts/setup.sh or install a JRE")
    return java


def _java_cmd(settings: DevSettings, node: int, heap: str, main: str, *args: str) -> list[str]:
    paths = KafkaPaths.of(settings, node)
    return [
        _java(),
        f"-Xms{heap}",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Dkafka.logs.dir={paths.logs}",
        # Kafka 4 reads OAuth URLs (here the issuer's JWKS file) only when they are allowed by name
        f"-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={oidc.OidcFiles.of(settings).jwks_url}",
        "-cp",
        f"{paths.lib}/*",
        main,
        *args,
    ]


def format_storage(settings: DevSettings, node: int = 0) -> None:
    """Format a node's KRaft log directory once, with the cluster's id; a formatted one is left alone."""
    paths = KafkaPaths.of(settings, node)
    if (paths.data / "meta.properties").exists():
        return
    cid = cluster.claim(settings).cluster_id
    cmd = _java_cmd(settings, node, "256m", "kafka.tools.StorageTool", "format", "-t", cid, "-c", str(paths.config))
    logger.info("formatting Kafka storage in %s (cluster id %s)", paths.data, cid)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=paths.root)
    if done.returncode != 0:
        raise DevStackError(f"kafka StorageTool format failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")


def _marker(settings: DevSettings, node: int) -> str:
    """What a node's command line holds: its config file, unique to this stack's data dir and node."""
    return f"{MAIN_CLASS} {KafkaPaths.of(settings, node).config}"


def pid(settings: DevSettings, node: int = 0) -> int | None:
    """Node ``node``'s PID when it is running, else None."""
    return running_pid(KafkaPaths.of(settings, node).pid_file, _marker(settings, node))


def start(settings: DevSettings, node: int = 0) -> int:
    """Start one node in the background (jars, config and storage prepared first); return its PID."""
    paths = KafkaPaths.of(settings, node)
    running = pid(settings, node)
    if running is not None:
        return running
    cluster.claim(settings)  # storage formatted for another number of nodes fails here, before anything starts
    require_free_ports(f"Kafka node {node}", cluster.ports(settings, node).as_dict())
    resolve_jars(settings)
    for folder in (paths.data, paths.logs):
        folder.mkdir(parents=True, exist_ok=True)
    write_config(settings, node)
    format_storage(settings, node)
    cmd = _java_cmd(settings, node, settings.devstack.kafka_heap, MAIN_CLASS, str(paths.config))
    new_pid = spawn(cmd, paths.stdout_log, cwd=paths.root, marker=_marker(settings, node))
    paths.pid_file.write_text(f"{new_pid}\n")
    logger.info("Kafka node %d starting, pid %d, log %s", node, new_pid, paths.server_log)
    return new_pid


def _answers(settings: DevSettings) -> bool:
    """Whether every node's client listeners accept connections and all are registered brokers."""
    listeners = [cluster.ports(settings, node) for node in cluster.nodes(settings)]
    host = settings.devstack.kafka_host
    if not all(port_open(p, host) for lst in listeners for p in (lst.plaintext, lst.sasl, lst.tls)):
        return False
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap_servers(settings), "logger": logger}
    client = AdminClient(conf)
    try:
        return len(client.list_topics(timeout=5).brokers) == cluster.size(settings)
    except Exception as exc:  # KafkaException while the brokers are still coming up
        logger.debug("Kafka not ready yet: %s", exc)
        return False


def wait_ready(settings: DevSettings, timeout_s: float = 180.0) -> None:
    """Block until every node is a broker the cluster's metadata lists; fail early if one died."""

    def ready() -> bool:
        for node in cluster.nodes(settings):
            if pid(settings, node) is None:
                paths = KafkaPaths.of(settings, node)
                raise DevStackError(
                    f"Kafka node {node} exited while starting; see {paths.server_log} and {paths.stdout_log}:\n"
                    f"{tail(paths.server_log)}\n{tail(paths.stdout_log)}"
                )
        return _answers(settings)

    if not wait_for(ready, timeout_s):
        logs = ", ".join(str(KafkaPaths.of(settings, n).server_log) for n in cluster.nodes(settings))
        raise DevStackError(f"Kafka did not answer within {timeout_s:.0f} s; see {logs}")
    ensure_scram_user(settings)


def ensure_scram_user(settings: DevSettings, timeout_s: float = 30.0) -> None:
    """Upsert the stack user's SCRAM-SHA-512 credential (idempotent; a new password replaces it)."""
    creds = credentials.load_or_create(settings)
    upsert = UserScramCredentialUpsertion(
        creds.kafka_user,
        ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
        creds.kafka_password.get_secret_value().encode(),
    )
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap_servers(settings), "logger": logger}
    client = AdminClient(conf)
    for user, future in client.alter_user_scram_credentials([upsert]).items():
        try:
            future.result(timeout_s)
        except Exception as exc:  # KafkaException; its text names the user, never the password
            raise DevStackError(f"could not set the SCRAM credential of Kafka user {user!r}: {exc}") from None


def stop(settings: DevSettings, timeout_s: float = 60.0, kill: bool = False, nodes: Iterable[int] = (0,)) -> None:
    """Stop nodes: SIGTERM (a controlled shutdown) then SIGKILL after ``timeout_s``.

    Every node gets its signal before any is waited for: a cluster stopped one node at a time
    loses its controller quorum half-way, and the last nodes' controlled shutdown would wait for
    it. ``kill=True`` sends SIGKILL at once, a crash as the chaos tests want it. Data is kept.
    """
    sig = signal.SIGKILL if kill else signal.SIGTERM
    running = {node: pid(settings, node) for node in nodes}
    for node, node_pid in running.items():
        if node_pid is not None:
            logger.info("stopping Kafka node %d, pid %d%s", node, node_pid, " (SIGKILL)" if kill else "")
            with contextlib.suppress(ProcessLookupError):  # it may have died on its own since
                os.kill(node_pid, sig)
    for node, node_pid in running.items():
        if node_pid is not None:
            stop_pid(node_pid, _marker(settings, node), sig, timeout_s)
        KafkaPaths.of(settings, node).pid_file.unlink(missing_ok=True)

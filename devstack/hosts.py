"""Several "hosts" on one machine: network namespaces on a bridge of their own, each with one address.

A :class:`HostNet` makes a bridge in the root namespace holding the *hub* address (where the
broker and the media server listen, ``kafka_host``) and, per host, a network namespace whose
``eth0`` is one end of a veth pair attached to that bridge, with an address of the same /24 and
its loopback up. The namespaces have no other route: their processes reach the hub and each
other, nothing else. Workers run inside with ``ip netns exec`` (:meth:`Host.spawn`), so the broker
sees each host's consumers come from that host's address, as on a real network; and
:meth:`Host.kill` SIGKILLs every process of a namespace at once (``ip netns pids``), the loss of
a whole machine. Everything is made under a random name and subnet of ``10.231.0.0/16`` (a range
no real network here uses) and removed on exit, also after a failure.

It needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2; :class:`HostNetError` says in one line
what failed. Used by ``tests/e2e/test_hosts.py`` and ``loadtest/hosts_failover.py``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka.admin import AdminClient

from devstack import kafka
from devstack.procs import port_in_use
from devstack.settings import DevSettings, DevStackSettings
from streams.settings import KafkaSettings

logger = logging.getLogger(__name__)

SUPERNET = ipaddress.IPv4Network("10.231.0.0/16")
HUB_HOST = 1  # the hub is .1 of the host net's /24; host i is .(FIRST_HOST + i)
FIRST_HOST = 10


class HostNetError(RuntimeError):
    """The namespaces, links or addresses could not be made (or a command in a host failed)."""


def _ip(*args: str, check: bool = True) -> str:
    ip = shutil.which("ip")
    if ip is None:
        raise HostNetError("iproute2's `ip` is needed to make network namespaces (apt-get install iproute2)")
    done = subprocess.run([ip, *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise HostNetError(f"`ip {' '.join(args)}` failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _subnets_in_use() -> set[ipaddress.IPv4Network]:
    used = set()
    for line in _ip("-o", "-4", "addr", "show").splitlines():
        parts = line.split()
        if "inet" in parts:
            used.add(ipaddress.IPv4Interface(parts[parts.index("inet") + 1]).network)
    return used


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 10.231.0.0/16 that overlaps no address on this machine's root namespace."""
    used = _subnets_in_use()
    candidates = list(SUPERNET.subnets(new_prefix=24))
    random.shuffle(candidates)
    for net in candidates:
        if not any(net.overlaps(u) for u in used):
            return net
    raise HostNetError(f"no free /24 left in {SUPERNET} for the host network")


@dataclass
class Host:
    """One namespace: its name, its address on the host net, and the processes it runs."""

    name: str
    address: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def command(self, argv: Iterable[str]) -> list[str]:
        """``argv`` run inside this host (``ip netns exec`` execs it: the PID is the command's)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def spawn(self, argv: Iterable[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside this host, output appended to ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(self.command(argv), env=dict(env), stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start_workers(self, stages: Iterable[str], env: Mapping[str, str], log_dir: Path) -> None:
        """One ``mediavec run <stage>`` per stage, as on any machine; the host's name is the instance id."""
        for stage in stages:
            argv = [sys.executable, "-m", "mediavec.cli", "run", stage, "--instance", self.name]
            self.spawn(argv, env, log_dir / f"{self.name}-{stage}.log")

    def pids(self) -> list[int]:
        """Every process in this host's namespace, whoever started it."""
        return [int(p) for p in _ip("netns", "pids", self.name, check=False).split()]

    def kill(self, timeout_s: float = 30.0) -> list[int]:
        """SIGKILL every process of the host at once, as a machine that loses power; returns their PIDs."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs:  # one started an instant ago may not be in the namespace yet
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout_s)
        deadline = time.monotonic() + timeout_s
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        if pids:
            logger.warning("host %s (%s): SIGKILLed %d process(es)", self.name, self.address, len(pids))
        return pids

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]


class HostNet:
    """``n`` namespaces on one bridge; a context manager that removes all of it on exit."""

    def __init__(self, n: int) -> None:
        if not 1 <= n <= 200:
            raise ValueError("between 1 and 200 hosts")
        token = uuid.uuid4().hex[:6]
        self.subnet = _free_subnet()
        self.bridge = f"mvb{token}"
        self.hub = str(self.subnet[HUB_HOST])
        self.hosts = [Host(f"mvh-{token}-{i}", str(self.subnet[FIRST_HOST + i])) for i in range(n)]
        self._veths = [f"mvv{token}{i}" for i in range(n)]

    @property
    def cidr(self) -> str:
        return str(self.subnet)

    def __enter__(self) -> HostNet:
        try:
            self._make()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.teardown()

    def _make(self) -> None:
        prefix = self.subnet.prefixlen
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.hub}/{prefix}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for host, veth in zip(self.hosts, self._veths, strict=True):
            _ip("netns", "add", host.name)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", host.name)
            _ip("link", "set", veth, "master", self.bridge)
            _ip("link", "set", veth, "up")
            _ip("-n", host.name, "addr", "add", f"{host.address}/{prefix}", "dev", "eth0")
            _ip("-n", host.name, "link", "set", "eth0", "up")
            _ip("-n", host.name, "link", "set", "lo", "up")
        logger.info("host net %s: hub %s, hosts %s", self.cidr, self.hub, [h.address for h in self.hosts])

    def teardown(self) -> None:
        """Kill what runs in the hosts, delete the namespaces (their veth ends go with them) and the bridge."""
        existing = set(_ip("netns", "list", check=False).split())
        for host in self.hosts:
            if host.name in existing:
                host.kill()
                _ip("netns", "del", host.name, check=False)
        for veth in self._veths:  # normally gone with their namespace's end
            _ip("link", "del", veth, check=False)
        _ip("link", "del", self.bridge, check=False)


@contextlib.contextmanager
def hub_broker(net: HostNet, data_dir: Path, heap: str = "512m") -> Iterator[DevSettings]:
    """A single-node dev stack broker of its own in ``data_dir``, its client listeners on the hub.

    Every host reaches it at ``net.hub``; so does the root namespace (the hub is one of its
    addresses). Killed and its data deleted on the way out, also after a failure.
    """
    base = _free_ports()
    dev = DevStackSettings(
        kafka_port=base, controller_port=base + 1, postgres_port=base + 5, kafka_heap=heap, kafka_host=net.hub
    )
    settings = DevSettings(data_dir=data_dir, devstack=dev, kafka=KafkaSettings(bootstrap_servers=f"{net.hub}:{base}"))
    try:
        kafka.start(settings)
        kafka.wait_ready(settings)
        yield settings
    finally:
        kafka.stop(settings, kill=True)
        shutil.rmtree(data_dir / "kafka" / "data", ignore_errors=True)


def _free_ports() -> int:
    """A kafka_port whose four listeners and the controller's (+0..+3) are free on loopback."""
    for _ in range(200):
        base = random.randrange(32000, 60000, 10)
        if not any(port_in_use(base + k) for k in range(4)):
            return base
    raise HostNetError("no free block of four ports for the hub's broker")


@dataclass(frozen=True)
class GroupSpread:
    """A consumer group as its coordinator sees it: state, and which client address owns which partitions."""

    state: str  # STABLE, PREPARING_REBALANCE, COMPLETING_REBALANCE, EMPTY, ...
    owners: dict[str, frozenset[int]]  # a member's address (its host) -> partitions assigned there
    partitions: int  # of the group's input topic

    @property
    def assigned(self) -> set[int]:
        return set().union(*self.owners.values()) if self.owners else set()

    def settled_on(self, addresses: Iterable[str]) -> bool:
        """Stable, every partition assigned, and the members exactly on ``addresses``."""
        complete = self.assigned == set(range(self.partitions))
        return self.state == "STABLE" and complete and set(self.owners) == set(addresses)


def group_spread(bootstrap: str, group: str, topic: str, timeout_s: float = 10.0) -> GroupSpread:
    """Describe ``group`` (its members' hosts and assignments on ``topic``) through the admin API."""
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": logger}
    admin = AdminClient(conf)
    described = admin.describe_consumer_groups([group], request_timeout=timeout_s)[group].result(timeout_s)
    meta = admin.list_topics(topic, timeout=timeout_s).topics[topic]
    owners: dict[str, set[int]] = {}
    for member in described.members:
        mine = owners.setdefault(member.host.lstrip("/"), set())
        mine.update(tp.partition for tp in member.assignment.topic_partitions if tp.topic == topic)
    return GroupSpread(described.state.name, {a: frozenset(p) for a, p in owners.items()}, len(meta.partitions))

"""Workers on several hosts, one host lost: how long until each stage's consumer group is settled on
the survivors (rebalance), and until its lag is back within the band it kept before (lag recovery).

Each host is a network namespace of its own (:mod:`devstack.hosts`) running a fetch and an embed
worker; the broker (a dev stack node of the run's own) and the load media server listen on the
hub address, the Qdrant sink runs in the root namespace. Requests are published at a steady
``--rate``; after ``--steady`` seconds the next host in turn is SIGKILLed whole, the two times are
taken, the host is started again (same instance ids) and the groups settle on every host again
before the next repetition. Needs root (network namespaces); nothing leaves the host net:

    sudo .venv/bin/python -m loadtest.hosts_failover --hosts 3 --repeats 3

takes about 90 s a repetition plus a minute to start (6 minutes as shown, on 2 cores) and rewrites the
``hosts-failover`` section of BENCHMARKS.md (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from consumers.embed.settings import EmbedSettings
from consumers.registry import EMBED, FETCH, SINK_QDRANT
from devstack.hosts import Host, HostNet, group_spread, hub_broker
from loadtest.load.harness import prepare_media
from loadtest.load.profile import load_path
from loadtest.load.server import LoadMediaServer
from loadtest.report import machine, write_section
from mediavec.localworkers import LocalWorkers
from mediavec.publish import new_run_id, produce_request
from mediavec.settings import Settings
from mediavec.status import look
from models.settings import ModelSettings
from schemas import MediaRequest
from streams.admin import ensure_topics
from streams.kafka import group_id, producer
from streams.settings import KafkaSettings, TopicSettings
from streams.topics import topics
from tests.e2e.corpus import loopback_fetch_settings

logger = logging.getLogger(__name__)
STAGES = (FETCH, EMBED)  # what the hosts run
KEY = "hosts-failover"


@dataclass
class Failover:
    """One host lost: per stage, seconds from the kill and the lag around it."""

    host: str
    rebalance_s: dict[str, float] = field(default_factory=dict)
    recovery_s: dict[str, float] = field(default_factory=dict)
    lag_before: dict[str, int] = field(default_factory=dict)  # the highest lag of the steady window
    lag_peak: dict[str, int] = field(default_factory=dict)
    rejoin_s: float = 0.0  # restart -> every group settled on every host again


class LagLog:
    """Each stage's lag, sampled in a thread as fast as the broker answers (``mediavec status``'s figure)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-log", daemon=True)

    def __enter__(self) -> LagLog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        wanted = {s.name for s in STAGES}
        while not self._stop.wait(0.2):
            try:
                lags = {g.stage: g.lag for g in look(self.settings) if g.stage in wanted}
            except Exception as exc:  # a coordinator moving: the next sample will do
                logger.debug("lag not read: %s", exc)
                continue
            self.samples.append((time.monotonic(), lags))

    def window(self, stage: str, start: float, end: float) -> list[tuple[float, int]]:
        return [(t, lags[stage]) for t, lags in list(self.samples) if start <= t <= end and stage in lags]


class Publisher(threading.Thread):
    """Requests at a steady rate, each a distinct JPEG of the load server, until stopped."""

    def __init__(self, settings: Settings, base_url: str, images: list[str], rate: float) -> None:
        super().__init__(name="publisher", daemon=True)
        self.settings, self.base_url, self.images, self.rate = settings, base_url, images, rate
        self.run_id, self.sent = new_run_id(), 0
        self.halt = threading.Event()

    def run(self) -> None:
        p, topic, start = producer(self.settings), topics(self.settings).requests.name, time.monotonic()
        while not self.halt.is_set():
            media = f"{self.run_id}-{self.sent:07d}"
            url = self.base_url + load_path(self.images[self.sent % len(self.images)], media)
            now = time.time()
            produce_request(p, topic, MediaRequest(media_id=media, url=url, run_id=self.run_id, published_at=now))
            self.sent += 1
            p.poll(0)
            self.halt.wait(max(0.0, start + self.sent / self.rate - time.monotonic()))
        p.flush(30)


def run_settings(hub: str, bootstrap: str, data_dir: Path, args: argparse.Namespace) -> Settings:
    kafka = KafkaSettings(
        bootstrap_servers=bootstrap,
        session_timeout_ms=args.session_timeout_ms,
        transaction_timeout_ms=args.transaction_timeout_ms,
    )
    return Settings(
        data_dir=data_dir,
        kafka=kafka,
        topics=TopicSettings(prefix=f"failover.{uuid.uuid4().hex[:6]}."),
        fetch=loopback_fetch_settings().model_copy(update={"allow_cidrs": (f"{hub}/32",)}),
        model=ModelSettings(allow_random_weights=True),
        embed=EmbedSettings(spaces=("scene",)),
    )


def _settled(settings: Settings, stage: str, addresses: list[str]) -> bool:
    spec = next(s for s in STAGES if s.name == stage)
    topic = topics(settings).by_name(spec.input).name
    try:
        return group_spread(settings.kafka.bootstrap_servers, group_id(settings, stage), topic).settled_on(addresses)
    except Exception as exc:  # a coordinator moving counts as not yet
        logger.debug("group of %s not described: %s", stage, exc)
        return False


def _settle_times(settings: Settings, addresses: list[str], since: float, timeout_s: float) -> dict[str, float]:
    """Per stage, seconds from ``since`` until its group is settled on ``addresses`` (all polled together)."""
    out: dict[str, float] = {}
    while len(out) < len(STAGES):
        for stage in (s.name for s in STAGES if s.name not in out):
            if _settled(settings, stage, addresses):
                out[stage] = time.monotonic() - since
        if time.monotonic() - since > timeout_s:
            raise TimeoutError(f"groups not settled on {addresses} within {timeout_s:.0f} s: only {out}")
        time.sleep(0.25)
    return out


def _recovery(lags: LagLog, stage: str, killed: float, settled: float, band: int, timeout_s: float) -> float:
    """Seconds from the kill to the first lag sample back within ``band`` once the group has settled."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        back = [t for t, lag in lags.window(stage, killed + settled, float("inf")) if lag <= band]
        if back:
            return back[0] - killed
        time.sleep(0.25)
    raise TimeoutError(f"{stage}: lag not back to {band} within {timeout_s:.0f} s of the kill")


def lose_host(net: HostNet, victim: Host, settings: Settings, lags: LagLog, args: argparse.Namespace) -> Failover:
    """Kill ``victim`` whole after a steady window; time the settling and the lag; start it again."""
    time.sleep(args.steady)
    killed = time.monotonic()
    out = Failover(victim.address)
    for stage in (s.name for s in STAGES):  # the first half of the wait lets a rejoin's catching up pass
        before = lags.window(stage, killed - args.steady / 2, killed)
        out.lag_before[stage] = max((lag for _, lag in before), default=0)
    victim.kill()
    survivors = [h.address for h in net.hosts if h is not victim]
    out.rebalance_s = _settle_times(settings, survivors, killed, 300)
    for stage, band in out.lag_before.items():
        out.recovery_s[stage] = _recovery(lags, stage, killed, out.rebalance_s[stage], band, args.recover_timeout)
        out.lag_peak[stage] = max((lag for _, lag in lags.window(stage, killed, time.monotonic())), default=0)
    logger.warning("lost %s: %s", victim.address, out)
    restarted = time.monotonic()
    victim.procs.clear()
    victim.start_workers((s.name for s in STAGES), host_env(settings, victim, args.work), args.work / "logs")
    everyone = [h.address for h in net.hosts]
    out.rejoin_s = max(_settle_times(settings, everyone, restarted, 300).values())
    return out


def host_env(settings: Settings, host: Host, work: Path) -> dict[str, str]:
    """The workers' environment on ``host``: the run's settings, a data directory of the host's own."""
    return {**os.environ, **settings.to_env(), "MEDIAVEC_DATA_DIR": str(work / host.name)}


def measure(args: argparse.Namespace) -> list[Failover]:
    media = args.work / "media"
    images, _, _ = prepare_media(media, with_video=False)
    with HostNet(args.hosts) as net, hub_broker(net, args.work / "broker") as broker:
        settings = run_settings(net.hub, broker.kafka.bootstrap_servers, args.work / "root", args)
        ensure_topics(settings)
        sink = LocalWorkers(settings, args.work / "logs", "root").start([SINK_QDRANT.name])
        with LoadMediaServer(media, host=net.hub) as server, LagLog(settings) as lags:
            for host in net.hosts:
                host.start_workers((s.name for s in STAGES), host_env(settings, host, args.work), args.work / "logs")
            everyone = [h.address for h in net.hosts]
            _settle_times(settings, everyone, time.monotonic(), 300)
            publisher = Publisher(settings, server.base_url, images, args.rate)
            publisher.start()
            try:
                return [lose_host(net, net.hosts[i % args.hosts], settings, lags, args) for i in range(args.repeats)]
            finally:
                publisher.halt.set()
                publisher.join(60)
                sink.stop()


def _row(i: int, f: Failover, stage: str) -> str:
    return (
        f"| {i} | {f.host} | {stage} | {f.rebalance_s[stage]:.1f} | {f.recovery_s[stage]:.1f} | "
        f"{f.lag_before[stage]} | {f.lag_peak[stage]} | {f.rejoin_s:.1f} |"
    )


def markdown(results: list[Failover], args: argparse.Namespace, command: str) -> str:
    lines = [
        "## Workers on several hosts: one host lost",
        "",
        f"`{command}`",
        "",
        f"{machine()}. {args.hosts} hosts (network namespaces on one bridge), each a fetch and an embed worker "
        f"(random-weight ViT-B-32, scene only); one broker, Qdrant sink in the root namespace; {args.rate:g} "
        f"requests/s throughout. Session timeout {args.session_timeout_ms / 1000:g} s, transaction timeout "
        f"{args.transaction_timeout_ms / 1000:g} s. Rebalance: kill -> the group stable on the survivors with "
        "every partition assigned. Lag recovery: kill -> lag back within the highest lag of the "
        f"{args.steady / 2:g} s before the kill. Rejoin: the host restarted -> every group stable on every host.",
        "",
        "| # | host lost | stage | rebalance s | lag recovery s | lag before (max) | lag peak | rejoin s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [_row(i, f, s.name) for i, f in enumerate(results, 1) for s in STAGES]
    lines.append("")
    for s in STAGES:
        reb = statistics.median(f.rebalance_s[s.name] for f in results)
        rec = statistics.median(f.recovery_s[s.name] for f in results)
        lines.append(f"- {s.name}: median rebalance {reb:.1f} s, median lag recovery {rec:.1f} s")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=3, help="network namespaces, each a fetch and an embed worker")
    ap.add_argument("--repeats", type=int, default=3, help="hosts lost, one after another (each restarted)")
    ap.add_argument("--rate", type=float, default=3.0, help="requests per second, steady")
    ap.add_argument("--steady", type=float, default=30.0, help="seconds of steady load before each kill")
    ap.add_argument("--session-timeout-ms", type=int, default=10_000)
    ap.add_argument("--transaction-timeout-ms", type=int, default=30_000)
    ap.add_argument("--recover-timeout", type=float, default=300.0, help="seconds a stage may take to recover")
    ap.add_argument("--work", type=Path, default=None, help="working directory, kept (default: a temporary one)")
    ap.add_argument("--no-write", action="store_true", help="print the section instead of writing BENCHMARKS.md")
    return ap


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    if args.hosts < 2:
        print("hosts_failover: --hosts must be at least 2 (one is lost)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mediavec-failover-") as tmp:
        args.work = args.work or Path(tmp)  # media, the hosts' data and the workers' logs
        results = measure(args)
    command = "python -m loadtest.hosts_failover " + " ".join(argv if argv is not None else sys.argv[1:])
    body = markdown(results, args, command.strip())
    print(body)
    if not args.no_write:
        write_section(KEY, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

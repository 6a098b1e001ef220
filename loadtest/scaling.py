"""The scaling curve: fetch and embed throughput against the number of worker processes.

For each stage and each ``k`` of ``--workers`` (1 2 3 4), on topics of their own:

- fetch: ``k`` ``mediavec run fetch`` processes (each at the load test's loopback fetch settings)
  join their group, then ``k x --media-per-worker`` distinct image requests are published in one
  burst, each a photo of the local load server (loopback, no added latency, no bandwidth cap, no
  failures), and the workers drain them;
- embed: ``k x --frames-per-worker`` real JPEG frames (the sample photos, cropped and decoded as
  the fetch stage decodes them) are produced into the frames topic first; then ``k`` embed worker
  processes with a no-op model (:mod:`loadtest.noop_embed`: constant unit vectors, no forward pass)
  drain them, everything else real: batches, decode, thumbnails, fp16 packing, Avro, transactions.

Items/s are timed by the stage's committed offsets over the steady part of the drain
(:mod:`loadtest.load.drain`: from the first look at which the group has all ``k`` members and 10 %
of the inputs are committed, to the first look at which 90 % are), and every output is counted
afterwards. The machine's CPU use and the cores the workers, the broker and the load server used
come from the same window. The partition counts
(requests 8, frames 16) bound ``k``: workers beyond them idle. By default the run starts a
single broker of its own (``devstack``, free ports, a temporary directory), deleted at the end;
``--no-stack`` uses the broker the settings name (``MEDIAVEC_KAFKA__BOOTSTRAP_SERVERS``). Each
measurement deletes its topics when it is counted.

    .venv/bin/python -m loadtest.scaling     # full size: estimated 5-8 minutes on 16 quiet cores
    .venv/bin/python -m loadtest.scaling --media-per-worker 300 --frames-per-worker 800 --no-write  # 2.5 min, 2 cores

Writes the "Scaling curve" section of BENCHMARKS.md (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from confluent_kafka import KafkaException

from consumers.registry import EMBED, FETCH
from devstack import kafka
from devstack.procs import DevStackError
from devstack.settings import DevSettings, DevStackSettings
from loadtest.bench_embed import make_frames
from loadtest.load.drain import CommitClock, Window, timed_drain, wait_members
from loadtest.load.harness import media_server, prepare_media
from loadtest.load.profile import LatencyModel, LoadProfile, plan_media
from loadtest.load.publisher import MediaSet, publish_planned
from loadtest.noop_embed import NoopEmbedWorkers
from loadtest.report import machine, write_section
from loadtest.scaling_report import Point, section
from mediavec.localworkers import LocalWorkers
from mediavec.settings import Settings, load_settings
from schemas import Frame, encode_frame
from streams.admin import ensure_topics
from streams.kafka import admin, group_id, producer, read_to_end
from streams.settings import KafkaSettings
from streams.topics import topics
from tests.cluster import free_base
from tests.e2e.corpus import loopback_fetch_settings

logger = logging.getLogger(__name__)
SECTION = "scaling_curve"
STAGES = (FETCH.name, EMBED.name)
# The publisher's profile: clean photos at loopback speed, so the workers' CPU is what is measured.
CLEAN = LoadProfile(rate=None, bandwidth_bps=0, latency=LatencyModel(median_s=0.0, tail_share=0.0), failures={})
FRAME_POOL = 32  # distinct frames; each is produced many times under its own media id


@dataclass(frozen=True)
class Plan:
    workers: tuple[int, ...] = (1, 2, 3, 4)
    stages: tuple[str, ...] = STAGES
    media_per_worker: int = 3000
    frames_per_worker: int = 6000
    timeout_s: float = 600.0


@dataclass
class Run:
    """What every measurement of the run shares: settings, plan, work directory, the broker's process."""

    settings: Settings
    plan: Plan
    work: Path
    broker_pid: int | None = None
    tag: str = field(default_factory=lambda: f"scaling-{uuid.uuid4().hex[:6]}")

    def of(self, stage: str, k: int) -> Settings:
        """Settings of one measurement: topics and groups of its own."""
        prefix = f"{self.settings.topics.prefix}{self.tag}.{stage}-k{k}."
        return self.settings.model_copy(update={"topics": self.settings.topics.model_copy(update={"prefix": prefix})})


def run_settings(base: Settings, conn: KafkaSettings | None, data_dir: Path) -> Settings:
    """``base`` on the broker ``conn`` (None: base's), fetching from loopback, scene vectors only."""
    return base.model_copy(
        update={
            "kafka": conn or base.kafka,
            "data_dir": data_dir,
            "fetch": loopback_fetch_settings(),
            "embed": base.embed.model_copy(update={"spaces": ("scene",)}),
        }
    )


@contextlib.contextmanager
def own_broker(data_dir: Path) -> Iterator[tuple[KafkaSettings, int | None]]:
    """A single dev stack broker in ``data_dir`` on free ports (never the dev or test stack's), killed after:
    its connection settings and process id."""
    base = free_base()
    dev = DevStackSettings(kafka_port=base, controller_port=base + 1, postgres_port=base + 50, kafka_heap="1g")
    conn = KafkaSettings(bootstrap_servers=f"127.0.0.1:{base}")
    stack = DevSettings(data_dir=data_dir, devstack=dev, kafka=conn)
    try:
        kafka.start(stack)
        kafka.wait_ready(stack)
        yield conn, kafka.pid(stack)
    finally:
        kafka.stop(stack, kill=True)


def _drain(
    run: Run,
    settings: Settings,
    stage: str,
    n: int,
    workers: list[LocalWorkers],
    extra: dict[str, int],
    fill: Callable[[], None] | None = None,
) -> Window:
    """Time ``workers`` (just started) until the stage's group has committed ``n`` inputs; then stop them.

    With ``fill``, the inputs are published by it once the group has all its members, rather than before.
    """
    spec = FETCH if stage == FETCH.name else EMBED
    roles = {"workers": [p.pid for w in workers for p in w.procs.values()], "harness": [os.getpid()]}
    roles |= {role: [pid] for role, pid in extra.items()}
    if run.broker_pid is not None:
        roles["broker"] = [run.broker_pid]
    clock = CommitClock(settings, group_id(settings, spec.name), topics(settings).by_name(spec.input), roles)

    def dead() -> list[str]:
        return [f"{w.instance} (log: {w.log_dir})" for w in workers if w.dead()]

    try:
        if fill is not None:
            wait_members(clock, len(workers), dead=dead, timeout_s=run.plan.timeout_s)
            fill()
        return timed_drain(clock, n, len(workers), dead=dead, timeout_s=run.plan.timeout_s)
    finally:
        clock.close()
        for w in workers:
            w.stop()


def _count(settings: Settings, topic: str) -> int:
    return sum(1 for _ in read_to_end(settings, topic, f"{settings.topics.prefix}scaling-count", timeout_s=30))


def _point(run: Run, settings: Settings, stage: str, k: int, n: int, window: Window) -> Point:
    """The measurement's figures, its outputs counted; then its topics are deleted (the disk they hold)."""
    t = topics(settings)
    output = t.frames if stage == FETCH.name else t.vectors
    point = Point(
        stage=stage,
        workers=k,
        partitions=t.requests.partitions if stage == FETCH.name else t.frames.partitions,
        items=n,
        outputs=_count(settings, output.name),
        dead_letters=_count(settings, t.dlq.name),
        window_items=window.items,
        seconds=window.seconds,
        machine_busy=window.machine_busy,
        cores=window.cores(),
        note=window.note,
    )
    logger.info("%s k=%d: %.1f items/s over %.1f s (%d timed)", stage, k, point.rate, point.seconds, point.window_items)
    client = admin(settings)  # held until the deletions are answered: a dropped client cancels them
    for name, done in client.delete_topics([s.name for s in t.all()], operation_timeout=30).items():
        try:
            done.result()
        except KafkaException as exc:  # the figures stand; the topic only holds disk until deleted by hand
            logger.warning("topic %s not deleted: %s", name, exc)
    return point


def measure_fetch(run: Run, k: int, media: MediaSet, server_pid: int) -> Point:
    """k fetch processes drain ``k x media_per_worker`` requests, published as one burst once all k joined.

    Not before they join, so that no join or rebalance falls in the timed window. (This harness found
    that a partition paused for backpressure and assigned back after a join was never read again;
    fixed in the runners, tests/integration/test_pause_rebalance.py.)
    """
    s = run.of(FETCH.name, k)
    ensure_topics(s)
    n, run_id = k * run.plan.media_per_worker, f"{run.tag}-fetch-k{k}"
    planned = [plan_media(CLEAN, i, run_id, media.images, None) for i in range(n)]
    logs = run.work / "logs" / f"fetch-k{k}"
    workers = [LocalWorkers(s, logs / f"w{i}", f"w{i}").start([FETCH.name]) for i in range(k)]
    fill = functools.partial(publish_planned, s, planned, media, run_id)
    window = _drain(run, s, FETCH.name, n, workers, {"load server": server_pid}, fill)
    return _point(run, s, FETCH.name, k, n, window)


def produce_frames(settings: Settings, pool: list[Frame], n: int, run_id: str) -> None:
    """``n`` frames into the frames topic, the pool's JPEGs in turn, each under a media id of its own."""
    p, topic = producer(settings), topics(settings).frames.name
    for i in range(n):
        frame = replace(pool[i % len(pool)], media_id=f"{run_id}-{i:07d}", run_id=run_id)
        while True:
            try:
                p.produce(topic, key=frame.media_id.encode(), value=encode_frame(frame))
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    if p.flush(120):
        raise RuntimeError(f"frames for {run_id} not acknowledged by the broker")


def measure_embed(run: Run, k: int, pool: list[Frame]) -> Point:
    """k no-op embed processes drain ``k x frames_per_worker`` frames produced beforehand."""
    s = run.of(EMBED.name, k)
    ensure_topics(s)
    n, run_id = k * run.plan.frames_per_worker, f"{run.tag}-embed-k{k}"
    produce_frames(s, pool, n, run_id)
    logs = run.work / "logs" / f"embed-k{k}"
    workers: list[LocalWorkers] = [NoopEmbedWorkers(s, logs / f"w{i}", f"w{i}").start() for i in range(k)]
    window = _drain(run, s, EMBED.name, n, workers, {})
    return _point(run, s, EMBED.name, k, n, window)


def measure(run: Run) -> list[Point]:
    """Every stage of the plan at every k, fetch first."""
    points: list[Point] = []
    if FETCH.name in run.plan.stages:
        images, _, _ = prepare_media(run.work / "media", with_video=False)
        with media_server(run.work / "media") as (url, server_pid):
            points += [measure_fetch(run, k, MediaSet(url, images), server_pid) for k in run.plan.workers]
    if EMBED.name in run.plan.stages:
        pool = make_frames(run.settings, FRAME_POOL)
        points += [measure_embed(run, k, pool) for k in run.plan.workers]
    return points


def parser() -> argparse.ArgumentParser:
    d = Plan()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=list(d.workers), help="worker process counts")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(d.stages))
    ap.add_argument("--media-per-worker", type=int, default=d.media_per_worker, help="fetch: requests per process")
    ap.add_argument("--frames-per-worker", type=int, default=d.frames_per_worker, help="embed: frames per process")
    ap.add_argument("--timeout-s", type=float, default=d.timeout_s, help="longest drain of one measurement")
    ap.add_argument("--no-stack", action="store_true", help="use the broker the settings name, not one of its own")
    ap.add_argument("--work", type=Path, help="keep media and worker logs here")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    return ap


def plan_of(args: argparse.Namespace) -> Plan:
    if min(args.workers) < 1 or min(args.media_per_worker, args.frames_per_worker) < 1:
        raise ValueError("--workers, --media-per-worker and --frames-per-worker must be at least 1")
    return Plan(
        workers=tuple(sorted(set(args.workers))),
        stages=tuple(s for s in STAGES if s in args.stages),
        media_per_worker=args.media_per_worker,
        frames_per_worker=args.frames_per_worker,
        timeout_s=args.timeout_s,
    )


def run_all(base: Settings, plan: Plan, work: Path, *, own: bool) -> tuple[list[Point], str]:
    """The plan on a broker of its own (``own``) or on ``base``'s: the points and a line naming the broker."""
    if not own:
        run = Run(run_settings(base, None, work / "data"), plan, work)
        return measure(run), f"the broker at {base.kafka.bootstrap_servers} (shared; its CPU not measured)"
    with own_broker(work / "broker") as (conn, pid):
        run = Run(run_settings(base, conn, work / "data"), plan, work, broker_pid=pid)
        return measure(run), "a single KRaft broker of its own (devstack, heap 1g) on the same machine"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        plan = plan_of(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mediavec-scaling-") as tmp:
        work = args.work or Path(tmp)
        try:
            points, broker = run_all(load_settings(), plan, work, own=not args.no_stack)
        except (DevStackError, RuntimeError, TimeoutError) as exc:
            logs = f"worker logs in {work / 'logs'}" if args.work else "rerun with --work DIR to keep the worker logs"
            print(f"error: {exc} ({logs})", file=sys.stderr)
            return 1
    command = "python -m loadtest.scaling " + " ".join(sys.argv[1:] if argv is None else argv)
    body = section(points, command.strip(), machine(), os.cpu_count() or 1, broker)
    print(body)
    if not args.no_write:
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

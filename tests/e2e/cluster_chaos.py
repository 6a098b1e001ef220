"""A chaos harness for a three-broker cluster: brokers SIGKILLed by role during ingest, restarted.

Shared by tests/e2e/test_cluster_chaos.py (short) and ``loadtest/chaos_cluster.py`` (long). The
roles are the active KRaft controller, the leader of the ``__transaction_state`` partition that
coordinates a running worker's transactional id, and "another" (the broker killed least so far,
not the last one). Requests go in in waves, one published just before each kill, so ingest
is in flight at every kill; the workers are ``mediavec run`` processes, restarted whenever one exits
(and, if asked, SIGKILLed at random as :mod:`tests.e2e.chaos` does). :func:`run_pipeline` checks
afterwards that the stores, the frames and vectors topics and the DLQ are exact.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import TopicPartition
from pydantic import SecretStr

from consumers.embed.settings import EmbedSettings
from devstack import postgres, stack
from devstack.mediaserver import Canary, MediaServer
from devstack.samples import sample_images
from devstack.settings import DevSettings
from mediavec.localworkers import LocalWorkers
from mediavec.progress import RunTracker
from mediavec.publish import new_run_id, publish
from models.settings import ModelSettings
from schemas import MediaRequest, decode_frame, decode_vector_batch
from stores.settings import PostgresSettings
from streams.admin import ensure_topics
from streams.kafka import consumer, group_id
from streams.topics import topics
from tests import cluster
from tests.e2e.chaos import ChaosReport, _kill_and_restart, _restart_dead
from tests.e2e.corpus import Corpus, build_corpus, loopback_fetch_settings
from tests.e2e.test_image_pipeline import _assert_dlq, _assert_postgres, _assert_store, _publish_invalid, _requests
from tests.kafkautil import group_caught_up, read_topic

logger = logging.getLogger(__name__)

STAGES = ["fetch", "embed", "sink-qdrant", "sink-postgres"]
SINKS = STAGES[2:]
TRANSACTIONAL = ("fetch", "embed")  # the Kafka-to-Kafka stages, whose transactions a coordinator keeps
INSTANCE = "cchaos"
ROLES = ("controller", "txn-coordinator", "another")
PHASE_TIMEOUT_S = 180.0  # a stuck pipeline fails here; not a performance budget


@dataclass(frozen=True)
class BrokerKill:
    role: str
    broker: int
    done: int  # requests stored or dead-lettered when it was killed
    published: int  # requests published by then


@dataclass
class ClusterChaosReport:
    broker_kills: list[BrokerKill] = field(default_factory=list)
    workers: ChaosReport = field(default_factory=ChaosReport)
    phases: list[tuple[str, float]] = field(default_factory=list)  # what was waited for, and for how long (s)
    seconds: float = 0.0

    def kills_by_role(self) -> Counter[str]:
        return Counter(k.role for k in self.broker_kills)


def pipeline_settings(stack_settings: DevSettings, work: Path) -> DevSettings:
    """The workers' settings: the cluster's Kafka and PostgreSQL, a cheap model, stores under ``work``."""
    dsn = postgres.dsn(stack_settings)
    return stack_settings.model_copy(
        update={
            "data_dir": work,
            # The default 45 s session, not the 10 s other chaos tests use: a broker's failover (fenced
            # after 9 s, then its coordinators reloaded elsewhere) outlasts 10 s, and a static member
            # whose session times out then is fenced (exits) or, worse, never rejoins (librdkafka #3437).
            # A SIGKILLed worker restarts with its instance id and takes its partitions straight back.
            "fetch": loopback_fetch_settings(),
            "model": ModelSettings(allow_random_weights=True),
            "embed": EmbedSettings(spaces=("scene",)),
            "postgres": PostgresSettings(dsn=SecretStr(dsn)),
        }
    )


class ClusterChaos:
    """Drives one run: publishes waves of requests, kills and restarts brokers by role between
    them, and keeps the workers alive throughout (restarting any that exit; with
    ``worker_kill_every_s``, also SIGKILLing a random one that often)."""

    def __init__(
        self,
        stack_settings: DevSettings,
        settings: DevSettings,
        workers: LocalWorkers,
        tracker: RunTracker,
        publish_wave: Callable[[int], int],
        *,
        down_s: float = 2.0,
        worker_kill_every_s: tuple[float, float] | None = None,
        phase_timeout_s: float = PHASE_TIMEOUT_S,
        seed: int = 18,
    ) -> None:
        self.stack, self.settings, self.workers, self.tracker = stack_settings, settings, workers, tracker
        self.publish_wave = publish_wave  # publishes wave i, returns how many requests that was
        self.down_s = down_s
        self.worker_kill_every_s = worker_kill_every_s
        self.phase_timeout_s = phase_timeout_s
        self.rng = random.Random(seed)
        self.report = ClusterChaosReport()
        self.published = 0
        self._next_worker_kill = float("inf")

    def run(self, roles: Sequence[str]) -> ClusterChaosReport:
        """Wave 0; per role, once half of what was published is done: the next wave, at once the kill of
        that role's broker, its restart; then everything drained into the sinks."""
        start = time.monotonic()
        if self.worker_kill_every_s is not None:
            self._next_worker_kill = start + self.rng.uniform(*self.worker_kill_every_s)
        self.published += self.publish_wave(0)
        for wave, role in enumerate(roles, start=1):
            self.tend(self._done_at_least(self.published // 2), "ingest under way")
            self.published += self.publish_wave(wave)  # a wave just published is in flight at the kill
            self._kill_and_restart(role)
        self.tend(self._done_at_least(self.tracker.progress.total), "every request done")
        self.worker_kill_every_s = None  # the sinks catch up undisturbed: a kill now would only slow the check
        self.tend(self.sinks_caught_up, "the sinks to catch up")
        self.report.seconds = time.monotonic() - start
        return self.report

    def _done_at_least(self, n: int) -> Callable[[], bool]:
        return lambda: self.tracker.progress.done >= n

    def _kill_and_restart(self, role: str) -> None:
        broker = self.victim(role)
        node = cluster.node_of(broker)
        kill = BrokerKill(role, broker, self.tracker.progress.done, self.published)
        logger.warning("cluster chaos: SIGKILL broker %d (%s) at %d/%d", broker, role, kill.done, kill.published)
        stack.stop_kafka(self.stack, kill=True, node=node)
        self.report.broker_kills.append(kill)
        if role == "controller":
            self.tend(lambda: _controller_or_none(self.stack) not in (None, broker), "a new controller", follow=False)
        pause_until = time.monotonic() + self.down_s  # ingest goes on while the broker is away
        self.tend(lambda: time.monotonic() >= pause_until, "the broker's time away", follow=False)
        self._restart(node)
        self.tend(lambda: cluster.all_in_sync(self.stack), "every replica back in sync", follow=False)

    def victim(self, role: str) -> int:
        """The broker that has ``role`` now."""
        if role == "controller":
            return cluster.active_controller(self.stack)
        if role == "txn-coordinator":
            stage = self.rng.choice(TRANSACTIONAL)
            return cluster.txn_coordinator(self.stack, f"{group_id(self.settings, stage)}.{INSTANCE}")
        killed = Counter({b: 0 for b in range(1, cluster.BROKERS + 1)})
        killed.update(k.broker for k in self.report.broker_kills)
        last = self.report.broker_kills[-1].broker if self.report.broker_kills else None
        return min((b for b in killed if b != last), key=lambda b: (killed[b], b))  # the least killed other one

    def _restart(self, node: int) -> None:
        """Start the node in a thread while the workers are tended; its failure fails the run."""
        errors: list[BaseException] = []

        def start() -> None:
            try:
                stack.start_kafka(self.stack, node=node)
            except BaseException as exc:  # re-raised below, in the driving thread
                errors.append(exc)

        thread = threading.Thread(target=start, daemon=True)
        thread.start()
        self.tend(lambda: not thread.is_alive(), f"Kafka node {node} to restart", follow=False)
        if errors:
            raise errors[0]

    def tend(self, until: Callable[[], bool], what: str, *, follow: bool = True) -> None:
        """Wait until ``until()``, restarting any worker that exited (and killing some, if asked).

        ``follow``: read the run's progress meanwhile. Not while a broker is away: the tracker may
        then block for seconds on a group coordinator that is gone, and nothing waits on progress.
        """
        started = time.monotonic()
        deadline = started + self.phase_timeout_s
        while not until():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"cluster chaos: waited {self.phase_timeout_s:.0f} s for {what}; at {self.tracker.progress}; "
                    f"open transactions: {open_transactions(self.settings)}; sinks caught up: "
                    f"{self.sinks_caught_up()}; a fresh tracker reads {self._fresh_progress()}; "
                    f"groups: {groups_state(self.settings)}; "
                    f"worker logs in {self.workers.log_dir}"
                )
            if follow:
                self.tracker.poll(0.5)
            else:
                time.sleep(0.5)
            _restart_dead(self.workers, self.report.workers)
            if time.monotonic() >= self._next_worker_kill and self.worker_kill_every_s is not None:
                _kill_and_restart(self.workers, self.rng.choice(STAGES), self.report.workers)
                self._next_worker_kill = time.monotonic() + self.rng.uniform(*self.worker_kill_every_s)
        self.report.phases.append((what, time.monotonic() - started))
        logger.info("cluster chaos: %s after %.1f s", what, time.monotonic() - started)

    def _fresh_progress(self) -> object:
        """The run's progress read anew from the topics: tells a stuck pipeline from a stuck tracker."""
        fresh = RunTracker(self.settings, self.tracker.run_id, self.tracker.progress.total, from_beginning=True)
        try:
            for _ in range(10):
                fresh.poll(1.0)
            return fresh.progress
        finally:
            fresh.close()

    def sinks_caught_up(self) -> bool:
        vectors = topics(self.settings).vectors.name
        return all(group_caught_up(self.settings, group_id(self.settings, s), vectors) for s in SINKS)


def open_transactions(settings: DevSettings) -> dict[str, list[tuple[int, int, int]]]:
    """(partition, last stable offset, high watermark) of each partition whose LSO lags its high
    watermark: a transaction still open there holds every read_committed reader back."""
    found: dict[str, list[tuple[int, int, int]]] = {}
    committed = consumer(settings, "cluster-chaos-diagnosis")
    uncommitted = consumer(settings, "cluster-chaos-diagnosis", overrides={"isolation.level": "read_uncommitted"})
    try:
        t = topics(settings)
        for name in (t.requests.name, t.frames.name, t.vectors.name, t.dlq.name):
            for p in cluster.admin(settings).list_topics(name, timeout=10).topics[name].partitions:
                tp = TopicPartition(name, p)
                lso = committed.get_watermark_offsets(tp, timeout=10)[1]
                high = uncommitted.get_watermark_offsets(tp, timeout=10)[1]
                if lso < high:
                    found.setdefault(name, []).append((p, lso, high))
    finally:
        committed.close()
        uncommitted.close()
    return found


def groups_state(settings: DevSettings) -> dict[str, str]:
    """Each stage's group as its coordinator sees it: state, and each member's assigned partitions."""
    ids = {group_id(settings, s): s for s in STAGES}
    found: dict[str, str] = {}
    for gid, future in cluster.admin(settings).describe_consumer_groups(list(ids), request_timeout=10).items():
        try:
            g = future.result(timeout=20)
        except Exception as exc:  # a diagnosis: say what the coordinator answered
            found[ids[gid]] = f"error {exc}"
            continue
        members = [
            f"{m.group_instance_id or m.client_id}:{len(m.assignment.topic_partitions) if m.assignment else 0}"
            for m in g.members
        ]
        found[ids[gid]] = f"{g.state} coord={g.coordinator.id} members={members}"
    return found


def _controller_or_none(stack_settings: DevSettings) -> int | None:
    try:
        return cluster.active_controller(stack_settings)
    except RuntimeError:  # an election under way
        return None


def waves(requests: list[MediaRequest], n: int) -> list[list[MediaRequest]]:
    """``requests`` in ``n`` interleaved waves, so every wave holds good and bad inputs alike."""
    return [requests[i::n] for i in range(n)]


def assert_topics_hold_each_once(settings: DevSettings, corpus: Corpus, point_ids: set[str]) -> None:
    """Committed frames and vectors: each good media's frame once, each stored point id once."""
    t = topics(settings)
    frames = Counter(decode_frame(m.value).media_id for m in read_topic(settings, t.frames.name, timeout_s=30))
    assert set(frames) == set(corpus.good), "a frame is missing, or one came from a bad input"
    assert max(frames.values()) == 1, f"frames committed twice: {[m for m, n in frames.items() if n > 1]}"
    rows = Counter(
        row.point_id
        for m in read_topic(settings, t.vectors.name, timeout_s=30)
        for row in decode_vector_batch(m.value).rows
    )
    assert set(rows) == point_ids, "the vectors topic does not hold exactly the stored points"
    assert max(rows.values()) == 1, f"vectors committed twice: {[p for p, n in rows.items() if n > 1]}"


@dataclass(frozen=True)
class ChaosRun:
    corpus: Corpus
    total: int  # requests: good, planted bad and invalid JSON
    report: ClusterChaosReport


def run_pipeline(
    stack_settings: DevSettings,
    work: Path,
    *,
    n_good: int,
    n_flaky: int = 6,
    roles: Sequence[str] = ROLES,
    down_s: float = 2.0,
    worker_kill_every_s: tuple[float, float] | None = None,
    phase_timeout_s: float = PHASE_TIMEOUT_S,
) -> ChaosRun:
    """The whole pipeline on the cluster of ``stack_settings``, through broker kills by ``roles``;
    then asserts that the DLQ, Qdrant, PostgreSQL and the frames and vectors topics are exact."""
    settings = pipeline_settings(stack_settings, work / "data")
    root = work / "media"
    root.mkdir(parents=True)
    with MediaServer(root) as server, Canary() as canary:
        corpus = build_corpus(root, sample_images(work / "samples"), server, canary, n_good=n_good, n_flaky=n_flaky)
        total = len(corpus.good) + len(corpus.bad) + len(corpus.invalid_json)
        ensure_topics(settings)
        run_id = new_run_id()
        parts = waves(_requests(corpus, run_id), len(roles) + 1)

        def publish_wave(i: int) -> int:
            if i == 0:
                _publish_invalid(settings, corpus, run_id)
            return publish(settings, parts[i], show_progress=False) + (len(corpus.invalid_json) if i == 0 else 0)

        tracker = RunTracker(settings, run_id, total)
        workers = LocalWorkers(settings, work / "logs", INSTANCE).start(STAGES)
        try:
            chaos = ClusterChaos(
                stack_settings,
                settings,
                workers,
                tracker,
                publish_wave,
                down_s=down_s,
                worker_kill_every_s=worker_kill_every_s,
                phase_timeout_s=phase_timeout_s,
            )
            report = chaos.run(roles)
        finally:
            tracker.close()
            workers.stop()
        _assert_dlq(settings, corpus)
        expected = _assert_store(settings, corpus)
        _assert_postgres(settings, expected)
        assert_topics_hold_each_once(settings, corpus, set(expected))
        assert canary.hits == 0, "a refused redirect reached 127.0.0.2"
    return ChaosRun(corpus, total, report)

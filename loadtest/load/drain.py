"""Timing a stage's worker processes as they drain a topic filled beforehand, and the CPU they used.

The clock reads the stage group's committed offsets (what ``mediavec status`` reads) every
``poll_s`` and times the steady part of the drain: from the first look at which the group has
all its ``k`` members and at least 10 % of the inputs are committed, to the first look at which
90 % are. So process start-up and the joins' rebalances are left out, and so are the two ends
where the pipeline is not full: the head start of the work in flight before the first commit
(a fetch worker holds up to ``4 x concurrency`` downloads), and the tail where workers whose
partitions are done sit idle. The machine's CPU (all cores) and each named process's CPU are
read at both ends of that window. A drain too short for it (smoke tests) falls back to a wider
window and says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import psutil
from confluent_kafka import KafkaException, TopicPartition

from mediavec.settings import Settings
from streams.kafka import admin, consumer
from streams.topics import TopicSpec

logger = logging.getLogger(__name__)
STEADY = (0.1, 0.9)  # the timed part of a drain: between these shares of the inputs committed


@dataclass(frozen=True)
class Snapshot:
    at: float  # time.monotonic()
    committed: int
    busy_s: float  # CPU seconds the whole machine spent busy (all cores)
    total_s: float  # CPU seconds the whole machine had (all cores)
    process_s: dict[str, float]  # role -> CPU seconds of its processes so far


@dataclass(frozen=True)
class Window:
    """What the clock saw between its start and its end."""

    start: Snapshot
    end: Snapshot
    note: str = ""  # why the window is not the one the module describes (a run too short for it)

    @property
    def items(self) -> int:
        return self.end.committed - self.start.committed

    @property
    def seconds(self) -> float:
        return self.end.at - self.start.at

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    @property
    def machine_busy(self) -> float:
        """Share of all the machine's cores busy during the window (0..1)."""
        total = self.end.total_s - self.start.total_s
        return (self.end.busy_s - self.start.busy_s) / total if total > 0 else 0.0

    def cores(self) -> dict[str, float]:
        """Cores each role used on average during the window."""
        if self.seconds <= 0:
            return {}
        return {
            role: (self.end.process_s[role] - self.start.process_s.get(role, 0.0)) / self.seconds
            for role in self.end.process_s
        }


def process_cpu_s(pids: Sequence[int]) -> float:
    """User + system CPU seconds of these processes (those still alive)."""
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def _machine_cpu() -> tuple[float, float]:
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    total = sum(t)
    return total - idle, total


class CommitClock:
    """Committed offsets of ``group`` on ``topic``, and its members, looked up on demand."""

    def __init__(self, settings: Settings, group: str, topic: TopicSpec, roles: Mapping[str, Sequence[int]]) -> None:
        self.group, self.roles = group, roles
        self._admin = admin(settings)
        self._consumer = consumer(settings, group)  # never subscribes: it only reads the group's offsets
        # The declared partitions, not the metadata's: right after the topic is made, the metadata can
        # list fewer, and a clock that misses a partition never sees the drain end.
        self._parts = [TopicPartition(topic.name, p) for p in range(topic.partitions)]

    @property
    def partitions(self) -> int:
        return len(self._parts)

    def members(self) -> int:
        """Members of a stable group (0 while it rebalances or cannot be described)."""
        try:
            described = self._admin.describe_consumer_groups([self.group])[self.group].result(10)
        except Exception as exc:  # the coordinator moving, the group not there yet
            logger.debug("group %s not described: %s", self.group, exc)
            return 0
        return len(described.members) if described.state.name == "STABLE" else 0

    def committed(self, timeout_s: float = 30.0) -> int:
        """Inputs committed by the group, asked again while its coordinator is not ready (a fresh broker)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return sum(max(0, tp.offset) for tp in self._consumer.committed(self._parts, timeout=10))
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise
                logger.debug("committed offsets of %s not read yet: %s", self.group, exc)
                time.sleep(0.2)

    def published(self) -> int:
        """Inputs in the topic now: the sum of its partitions' end offsets (a producer without transactions)."""
        return sum(max(0, self._consumer.get_watermark_offsets(tp, timeout=10)[1]) for tp in self._parts)

    def snapshot(self) -> Snapshot:
        done = self.committed()
        busy, total = _machine_cpu()
        cpu = {role: process_cpu_s(pids) for role, pids in self.roles.items()}
        return Snapshot(time.monotonic(), done, busy, total, cpu)

    def behind(self) -> str:
        """The partitions not committed to their end, with their owners: what a stuck drain says."""
        ends = {tp.partition: self._consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in self._parts}
        done = {tp.partition: max(0, tp.offset) for tp in self._consumer.committed(self._parts, timeout=10)}
        owners: dict[int, str] = {}
        try:
            described = self._admin.describe_consumer_groups([self.group])[self.group].result(10)
            for m in described.members:
                owners |= {tp.partition: m.group_instance_id or m.member_id for tp in m.assignment.topic_partitions}
        except Exception as exc:  # a description is a courtesy here, the error is raised anyway
            logger.debug("group %s not described: %s", self.group, exc)
        lagging = [p for p in sorted(ends) if done.get(p, 0) < ends[p]]
        return ", ".join(f"p{p} {done.get(p, 0)}/{ends[p]} ({owners.get(p, 'no owner')})" for p in lagging)

    def close(self) -> None:
        self._consumer.close()


def wait_members(clock: CommitClock, members: int, *, dead: Callable[[], list[str]], timeout_s: float) -> None:
    """Wait until the group is stable with ``members`` members (workers started on an empty topic)."""
    deadline = time.monotonic() + timeout_s
    while clock.members() < members:
        if dead():
            raise RuntimeError(f"worker(s) exited: {dead()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{clock.group}: not {members} members after {timeout_s:.0f} s")
        time.sleep(0.2)


def timed_drain(
    clock: CommitClock,
    expected: int,
    members: int,
    *,
    dead: Callable[[], list[str]],
    timeout_s: float,
    poll_s: float = 0.2,
    steady: tuple[float, float] = STEADY,
) -> Window:
    """Look until ``expected`` input offsets are committed; the window is described in the module's doc.

    Raises RuntimeError when a worker exits, TimeoutError after ``timeout_s``.
    """
    lo, hi = expected * steady[0], expected * steady[1]
    started = clock.snapshot()  # the workers were just started
    first = start = end = None
    deadline = time.monotonic() + timeout_s
    while True:
        now = clock.snapshot()
        if first is None and now.committed > 0:
            first = now
        if start is None and lo <= now.committed < hi and clock.members() >= members:
            start = now
        if end is None and now.committed >= hi:
            end = now
        if now.committed >= expected:
            assert end is not None
            return _window(started, first, start, end, members)
        if dead():
            raise RuntimeError(f"worker(s) exited: {dead()}")
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{clock.group}: {now.committed} of {expected} committed after {timeout_s:.0f} s; "
                f"behind: {clock.behind()}"
            )
        time.sleep(poll_s)


def _window(started: Snapshot, first: Snapshot | None, start: Snapshot | None, end: Snapshot, members: int) -> Window:
    if start is not None:
        return Window(start, end)
    if first is not None and first.at < end.at:
        return Window(first, end, note=f"from the first commit: never {members} members in the steady part")
    return Window(started, end, note="start-up included: the drain was too short to time")

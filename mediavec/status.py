"""`mediavec status`: per stage and consumer group, lag, throughput and an ETA to drain.

Lag is the sum over the stage's input partitions of (end offset - committed offset), except that a
partition written in transactions ends with a commit marker, which no consumer commits past: when
only one offset is left, a read_committed peek decides whether it is a record or the marker. Throughput
is how fast the committed offsets advance between two looks; with ``--watch`` the view refreshes.

Below the stages, the remote embedding providers of this host's embed workers (when any embeds
through one): each worker's concurrency limit and requests in flight, the circuit's state, and
the quota in use (requests/s and tokens/min over the last minute, against the configured quota).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from consumers.registry import STAGES
from mediavec.settings import Settings
from streams.kafka import consumer, group_id
from streams.topics import topics


@dataclass(frozen=True)
class GroupState:
    stage: str
    group: str
    topic: str
    end: int  # sum of end offsets
    committed: int  # sum of committed offsets (0 where nothing was committed)
    at: float

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


def look(settings: Settings) -> list[GroupState]:
    t = topics(settings)
    out = []
    for spec in STAGES:  # every stage of the registry, in pipeline order
        topic = t.by_name(spec.input).name
        group = group_id(settings, spec.name)
        c: Consumer = consumer(settings, group)
        try:
            meta = c.list_topics(topic, timeout=10).topics.get(topic)
            parts = [TopicPartition(topic, p) for p in (meta.partitions if meta else [])]
            ends = {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
            done = {tp.partition: max(0, tp.offset) for tp in c.committed(parts, timeout=10)} if parts else {}
            tail = [
                TopicPartition(topic, p, done[p]) for p, e in ends.items() if e - done.get(p, 0) == 1 and done.get(p)
            ]
            for tp in _only_markers(settings, tail):
                ends[tp.partition] = tp.offset
            end, committed = sum(ends.values()), sum(done.values())
        except KafkaException:
            end, committed = 0, 0
        finally:
            c.close()
        out.append(GroupState(spec.name, group, topic, end, committed, time.monotonic()))
    return out


def render(now: list[GroupState], before: list[GroupState] | None, providers: Sequence[dict[str, Any]] = ()) -> str:
    lines = [f"{'stage':<15} {'group':<32} {'lag':>9} {'events/s':>9} {'ETA':>9}"]
    prev = {s.stage: s for s in before or []}
    for s in now:
        p = prev.get(s.stage)
        rate = (s.committed - p.committed) / (s.at - p.at) if p and s.at > p.at else None
        eta = "-" if s.lag == 0 else (f"{s.lag / rate:.0f}s" if rate else "?")
        rate_text = f"{rate:.1f}" if rate is not None else "-"
        lines.append(f"{s.stage:<15} {s.group:<32} {s.lag:>9} {rate_text:>9} {eta:>9}")
    return "\n".join(lines + render_providers(providers))


def render_providers(reports: Sequence[dict[str, Any]]) -> list[str]:
    """Lines for the remote providers' reports (none when no worker embeds remotely)."""
    if not reports:
        return []
    head = ("provider", "worker", "limit", "in use", "circuit", "req/s", "tokens/min", "429s")
    lines = ["", "{:<32} {:<24} {:>5} {:>6} {:>9} {:>14} {:>18} {:>6}".format(*head)]
    for r in reports:
        lines.append(
            f"{str(r.get('provider'))[:32]:<32} {str(r.get('worker'))[:24]:<24} {r.get('limit', '-'):>5} "
            f"{r.get('in_flight', '-'):>6} {r.get('circuit')!s:>9} "
            f"{_use(r.get('requests_per_s'), r.get('quota_requests_per_s'), '.1f'):>14} "
            f"{_use(r.get('tokens_per_min'), r.get('quota_tokens_per_min'), '.0f'):>18} {r.get('throttled', 0):>6}"
        )
    return lines


def _use(rate: object, quota: object, fmt: str) -> str:
    """``rate/quota (share)``, or the rate alone where no quota is set."""
    if not isinstance(rate, int | float):
        return "-"
    if not isinstance(quota, int | float) or quota <= 0:
        return format(rate, fmt)
    return f"{rate:{fmt}}/{quota:{fmt}} {rate / quota:.0%}"


def _only_markers(settings: Settings, tails: list[TopicPartition]) -> list[TopicPartition]:
    """Of these (partition, committed offset) pairs, those with no committed record left to read."""
    if not tails:
        return []
    peek: Consumer = consumer(
        settings,
        f"{settings.topics.prefix}mediavec.status-peek",
        overrides={"enable.partition.eof": True, "enable.auto.commit": False, "isolation.level": "read_committed"},
    )
    try:
        peek.assign(tails)
        pending = {tp.partition: tp for tp in tails}
        empty = []
        deadline = time.monotonic() + 5
        while pending and time.monotonic() < deadline:
            msg = peek.poll(0.5)
            if msg is None:
                continue
            tp = pending.pop(msg.partition() or 0, None)
            err = msg.error()
            if tp is not None and err is not None and err.code() == KafkaError._PARTITION_EOF:
                empty.append(tp)  # end of partition before any record: only the marker was left
        return empty
    finally:
        peek.close()

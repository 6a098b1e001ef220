"""Dead letters: list them and redrive them (``streams.stage.dead_letter`` builds them)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import TopicPartition

from schemas import DeadLetter, decode_dead_letter
from streams.kafka import consumer, producer
from streams.settings import Settings
from streams.stage import dead_letter
from streams.topics import topics

logger = logging.getLogger(__name__)
__all__ = ["DlqEntry", "dead_letter", "read_entries", "redrive"]


@dataclass(frozen=True)
class DlqEntry:
    partition: int
    offset: int
    letter: DeadLetter


def read_entries(settings: Settings, timeout_s: float = 10.0) -> Iterator[DlqEntry]:
    """Every committed entry now in the DLQ topic, oldest first per partition (no group state)."""
    name = topics(settings).dlq.name
    c = consumer(settings, f"{settings.topics.prefix}mediavec.dlq-reader", overrides={"enable.partition.eof": True})
    try:
        meta = c.list_topics(name, timeout=timeout_s).topics[name]
        parts = []
        for p in meta.partitions:
            low, high = c.get_watermark_offsets(TopicPartition(name, p), timeout=timeout_s)
            if high > low:
                parts.append(TopicPartition(name, p, low))
        if not parts:
            return
        c.assign(parts)
        pending = {tp.partition for tp in parts}
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                pending.discard(msg.partition())  # end of partition
                continue
            deadline = time.monotonic() + timeout_s
            yield DlqEntry(msg.partition() or 0, msg.offset() or 0, decode_dead_letter(msg.value() or b""))
    finally:
        c.close()


def redrive(settings: Settings, entries: list[DlqEntry], flush_timeout_s: float = 30.0) -> int:
    """Republish the original events to their source topics; returns how many were sent."""
    p = producer(settings)
    for e in entries:
        dl = e.letter
        headers: list[tuple[str, str | bytes | None]] = [
            (h.key, h.value) for h in dl.original_headers if h.key != "mediavec-redrive-count"
        ]
        headers.append(("mediavec-redrive-count", str(dl.redrive_count + 1).encode()))
        p.produce(dl.source_topic, key=dl.original_key, value=dl.original_value, headers=headers)
        p.poll(0)
    left = p.flush(flush_timeout_s)
    if left:
        raise RuntimeError(f"{left} redriven events were not acknowledged in {flush_timeout_s}s")
    return len(entries)

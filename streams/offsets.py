"""Consumed offsets, computed once for every runner: what to commit after a batch.

Kafka's committed offset is the *next* offset to read, so a batch that ends at offset ``o`` of a
partition commits ``o + 1``. The transactional runners send these to the transaction
(:func:`topic_partitions`); the store sink records them in its store beside the rows.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import TopicPartition

from streams.stage import InputRecord

Offsets = dict[tuple[str, int], int]  # (topic, partition) -> next offset to read


def next_offsets(records: Iterable[InputRecord]) -> Offsets:
    """The offset after the last record of each partition in ``records``."""
    nxt: Offsets = {}
    for r in records:
        tp = (r.topic, r.partition)
        nxt[tp] = max(nxt.get(tp, 0), r.offset + 1)
    return nxt


def topic_partitions(offsets: Offsets) -> list[TopicPartition]:
    """``offsets`` as the client's commit argument."""
    return [TopicPartition(t, p, o) for (t, p), o in offsets.items()]

"""Client factories (every producer, consumer and admin client is configured here) and a topic reader."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.registry import use_registry
from streams.settings import StreamSettings

# librdkafka's own log lines go through Python logging (not raw to stderr), under this name.
RDKAFKA_LOGGER = logging.getLogger("librdkafka")
logger = logging.getLogger(__name__)


def _base(settings: StreamSettings) -> dict[str, Any]:
    return {**settings.kafka.client_config(), "logger": RDKAFKA_LOGGER}


def group_id(settings: StreamSettings, name: str) -> str:
    """Consumer group of a stage (the topic prefix isolates tenants and tests)."""
    return f"{settings.topics.prefix}mediavec.{name}"


def consumer(
    settings: StreamSettings, group: str, *, instance: str | None = None, overrides: dict[str, Any] | None = None
) -> Consumer:
    """A read_committed consumer; ``instance`` makes it a static group member (KIP-345), so a
    restarted worker takes its partitions straight back instead of waiting out a rebalance."""
    use_registry(settings)  # every reader of the Avro topics takes the framing the settings say
    static = {"group.instance.id": f"{group}.{instance}"} if instance else {}
    conf = {
        **_base(settings),
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "max.poll.interval.ms": settings.kafka.max_poll_interval_ms,
        "session.timeout.ms": settings.kafka.session_timeout_ms,
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 16 * 1024 * 1024,
        **static,
        **(overrides or {}),
    }
    return Consumer(conf)


def transactional_producer(settings: StreamSettings, transactional_id: str, **overrides: Any) -> Producer:
    use_registry(settings)  # and every writer
    conf = {
        **_base(settings),
        "transactional.id": transactional_id,
        "transaction.timeout.ms": settings.kafka.transaction_timeout_ms,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.max.bytes": 10 * 1024 * 1024,
        **overrides,
    }
    return Producer(conf)


def producer(settings: StreamSettings, **overrides: Any) -> Producer:
    """Idempotent, non-transactional producer (publishing requests, redriving the DLQ)."""
    use_registry(settings)
    conf = {
        **_base(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 10,
        "compression.type": "lz4",
        "message.max.bytes": 10 * 1024 * 1024,
        **overrides,
    }
    return Producer(conf)


def admin(settings: StreamSettings) -> AdminClient:
    return AdminClient(_base(settings))


def read_to_end(
    settings: StreamSettings,
    topic: str,
    reader: str,
    *,
    timeout_s: float = 10.0,
    committed_only: bool = True,
    strict: bool = False,
) -> Iterator[Message]:
    """Every record now in ``topic``, from the start of each partition to its end (no group state).

    ``reader`` names the throwaway consumer group (nothing is committed). Stops when every partition
    reported its end, or when no record came for ``timeout_s`` (``strict``: then raise TimeoutError).
    """
    iso = "read_committed" if committed_only else "read_uncommitted"
    c = consumer(settings, reader, overrides={"enable.partition.eof": True, "isolation.level": iso})
    try:
        meta = c.list_topics(topic, timeout=timeout_s).topics[topic]
        parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
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
            yield msg
        if pending:
            if strict:
                raise TimeoutError(f"did not reach the end of {topic} partitions {sorted(pending)}")
            logger.warning("stopped reading %s before the end of partitions %s", topic, sorted(pending))
    finally:
        c.close()

"""Idempotent topic creation from the declarations in streams.topics."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.kafka import admin
from streams.settings import StreamSettings
from streams.topics import TopicSpec, topics

logger = logging.getLogger(__name__)


def ensure_topics(
    settings: StreamSettings, specs: tuple[TopicSpec, ...] | None = None, timeout_s: float = 30.0
) -> list[str]:
    """Create the declared topics that do not exist yet; return the names created."""
    client = admin(settings)
    wanted = specs or topics(settings).all()
    existing = set(client.list_topics(timeout=timeout_s).topics)
    new = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=settings.topics.replication_factor,
            config=s.config(),
        )
        for s in wanted
        if s.name not in existing
    ]
    created = []
    for name, fut in client.create_topics(new, request_timeout=timeout_s).items() if new else []:
        try:
            fut.result()
            created.append(name)
            logger.info("created topic %s", name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    for spec in wanted:
        _warn_if_underpartitioned(client, spec, timeout_s)
    return created


def _warn_if_underpartitioned(client: AdminClient, spec: TopicSpec, timeout_s: float) -> None:
    meta = client.list_topics(spec.name, timeout=timeout_s).topics.get(spec.name)
    if meta is not None and 0 < len(meta.partitions) < spec.partitions:  # 0: just created, not yet visible
        logger.warning("topic %s has %d partitions, %d declared", spec.name, len(meta.partitions), spec.partitions)


def partition_count(settings: StreamSettings, topic: str, timeout_s: float = 10.0) -> int:
    meta = admin(settings).list_topics(topic, timeout=timeout_s).topics.get(topic)
    return len(meta.partitions) if meta is not None else 0

"""Idempotent topic creation from the declarations in streams.topics, and the check for drift."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from streams.kafka import admin
from streams.settings import StreamSettings
from streams.topiccheck import Drift, TopicState, declared, drift, topic_config
from streams.topics import TopicSpec, topics

logger = logging.getLogger(__name__)


def ensure_topics(
    settings: StreamSettings, specs: tuple[TopicSpec, ...] | None = None, timeout_s: float = 30.0
) -> list[str]:
    """Create the declared topics that do not exist yet; return the names created.

    They get ``replication_factor`` replicas and, when set, ``min.insync.replicas``; a topic that
    exists is left as it is (:func:`check_topics` reports how it differs).
    """
    client = admin(settings)
    wanted = specs or topics(settings).all()
    existing = set(client.list_topics(timeout=timeout_s).topics)
    new = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=settings.topics.replication_factor,
            config=topic_config(settings, s),
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


def describe_topics(settings: StreamSettings, names: list[str], timeout_s: float = 30.0) -> dict[str, TopicState]:
    """The broker's view of the named topics that exist: replicas per partition, effective config."""
    client = admin(settings)
    listed = client.list_topics(timeout=timeout_s).topics
    present = [name for name in names if name in listed]
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in present]
    futures = client.describe_configs(resources, request_timeout=timeout_s) if resources else {}
    states = {}
    for resource, future in futures.items():
        entries = future.result()
        partitions = listed[resource.name].partitions
        states[resource.name] = TopicState(
            replicas=tuple(len(partitions[p].replicas) for p in sorted(partitions)),
            config={key: entry.value for key, entry in entries.items() if entry.value is not None},
        )
    return states


def check_topics(
    settings: StreamSettings, specs: tuple[TopicSpec, ...] | None = None, timeout_s: float = 30.0
) -> list[Drift]:
    """How the broker's topics differ from their declarations (``mediavec topics --check``)."""
    wanted = [declared(settings, spec) for spec in specs or topics(settings).all()]
    states = describe_topics(settings, [want.name for want in wanted], timeout_s)
    return [d for want in wanted for d in drift(want, states.get(want.name))]

"""Every topic, declared once: name, partitions, retention, encoding and where bad input goes.

No other module spells a topic name; they all ask :func:`topic_names` or a :class:`TopicSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from streams.settings import StreamSettings

Encoding = Literal["json:media_request/v1", "avro:frame/v1", "avro:vector_batch/v1", "avro:dead_letter/v1", "json:seen"]
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    key: str  # the logical name used in code
    name: str  # the real topic name, prefix included
    partitions: int
    retention_ms: int
    encoding: Encoding
    dlq: str | None  # real name of the topic that takes this topic's bad events
    max_message_bytes: int = 8 * 1024 * 1024
    compacted: bool = False

    @property
    def avro_event(self) -> str | None:
        """The Avro event this topic carries (frame, vector_batch, dead_letter); None for JSON topics."""
        kind, _, schema = self.encoding.partition(":")
        return schema.split("/")[0] if kind == "avro" else None

    def config(self) -> dict[str, str]:
        conf = {
            "retention.ms": str(self.retention_ms),
            "max.message.bytes": str(self.max_message_bytes),
            "compression.type": "producer",
        }
        if self.compacted:
            conf["cleanup.policy"] = "compact"
        return conf


@dataclass(frozen=True)
class Topics:
    requests: TopicSpec
    frames: TopicSpec
    vectors: TopicSpec
    dlq: TopicSpec
    seen: TopicSpec
    skipped: TopicSpec

    def all(self) -> tuple[TopicSpec, ...]:
        return (self.requests, self.frames, self.vectors, self.dlq, self.seen, self.skipped)

    def by_name(self, name: str) -> TopicSpec:
        for spec in self.all():
            if spec.name == name or spec.key == name:
                return spec
        raise KeyError(f"unknown topic {name!r}; known: {[s.name for s in self.all()]}")


def topics(settings: StreamSettings) -> Topics:
    t = settings.topics
    p = t.prefix
    shared = t.sink_prefix if t.sink_prefix is not None else p
    dlq = f"{shared}media.dlq"
    return Topics(
        # Requests are the replay source for reindexing: keep them for 30 days.
        requests=TopicSpec(
            "requests", f"{p}media.requests", t.requests_partitions, 30 * DAY_MS, "json:media_request/v1", dlq
        ),
        frames=TopicSpec("frames", f"{p}media.frames", t.frames_partitions, 2 * DAY_MS, "avro:frame/v1", dlq),
        vectors=TopicSpec("vectors", f"{shared}vectors", t.vectors_partitions, 7 * DAY_MS, "avro:vector_batch/v1", dlq),
        dlq=TopicSpec("dlq", dlq, t.dlq_partitions, 30 * DAY_MS, "avro:dead_letter/v1", None),
        # Media already processed (by URL and by content hash): the fetch stage's dedup table.
        seen=TopicSpec("seen", f"{p}media.seen", 4, -1, "json:seen", None, compacted=True),
        # Media skipped on purpose (duplicates of earlier media), in the dead letter's schema: not failures.
        skipped=TopicSpec(
            "skipped", f"{shared}media.skipped", t.dlq_partitions, 30 * DAY_MS, "avro:dead_letter/v1", None
        ),
    )

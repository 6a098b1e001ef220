"""Progress of a run, read from Kafka alone: stored of total, rate, success rate, ETA.

A vector batch of the run counts as stored once the sink's consumer group has committed past
its offset (the sink commits only after its store acknowledged the write and recorded the
offsets). A run's dead letters are read from the DLQ. This works for every store backend and
from any process, while the sinks hold their stores.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from schemas import SchemaError, decode_dead_letter, decode_frame, decode_request, decode_vector_batch
from streams.kafka import consumer, group_id
from streams.settings import Settings
from streams.topics import topics

logger = logging.getLogger(__name__)


@dataclass
class RunProgress:
    total: int
    stored: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)
    causes: dict[str, int] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return self.stored + self.failed

    @property
    def rate(self) -> float:
        return self.done / max(1e-6, time.monotonic() - self.started)

    @property
    def success_rate(self) -> float:
        return self.stored / self.done if self.done else 1.0

    @property
    def eta_s(self) -> float | None:
        return (self.total - self.done) / self.rate if self.rate > 0 else None


class RunTracker:
    """Follows one run on the vectors and DLQ topics, from the moment it is created."""

    def __init__(
        self, settings: Settings, run_id: str, total: int, sink: str = "sink-qdrant", sink_group: str | None = None
    ) -> None:
        self.settings = settings
        self.run_id = run_id
        self.progress = RunProgress(total)
        t = topics(settings)
        self._vectors, self._dlq = t.vectors.name, t.dlq.name
        self._reader = consumer(settings, f"{settings.topics.prefix}mediavec.progress-reader")
        self._sink_group: Consumer = consumer(settings, sink_group or group_id(settings, sink))
        self._parts = self._partitions()
        self._reader.assign([TopicPartition(tp, p, OFFSET_END) for tp, p in self._parts])
        self._pending: dict[int, list[tuple[int, str]]] = {}  # vectors partition -> (offset, media id)
        self._stored: set[str] = set()
        self._failed: set[str] = set()

    def _partitions(self, wait_s: float = 30.0) -> list[tuple[str, int]]:
        """Partitions of the vectors and DLQ topics; topics just created may take a moment to show."""
        deadline = time.monotonic() + wait_s
        while True:
            md = self._reader.list_topics(timeout=10).topics
            missing = [name for name in (self._vectors, self._dlq) if name not in md]
            if not missing:
                return [(name, p) for name in (self._vectors, self._dlq) for p in md[name].partitions]
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics {missing} do not exist; create them with `mediavec topics`")
            time.sleep(0.2)

    def poll(self, budget_s: float = 0.5) -> RunProgress:
        end = time.monotonic() + budget_s
        while time.monotonic() < end:
            for msg in self._reader.consume(500, timeout=max(0.0, end - time.monotonic())):
                if msg.error() is None:
                    self._take(msg.topic() or "", msg.partition() or 0, msg.offset() or 0, msg.value() or b"")
        self._settle()
        return self.progress

    def _take(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        try:
            if topic == self._vectors:
                batch = decode_vector_batch(value)
                if batch.run_id == self.run_id and batch.rows:
                    self._pending.setdefault(partition, []).append((offset, batch.rows[0].media_id))
            else:
                letter = decode_dead_letter(value)
                if _run_of(letter.original_value) == self.run_id and letter.media_id not in self._failed:
                    self._failed.add(letter.media_id)
                    self.progress.causes[letter.error_class] = self.progress.causes.get(letter.error_class, 0) + 1
        except SchemaError as exc:
            logger.debug("progress: skipping undecodable %s@%d: %s", topic, offset, exc)

    def _settle(self) -> None:
        if self._pending:
            tps = [TopicPartition(self._vectors, p) for p in self._pending]
            try:
                committed = self._sink_group.committed(tps, timeout=10)
            except KafkaException as exc:  # coordinator moving (broker restart): try again next poll
                logger.info("progress: committed offsets unavailable for now: %s", exc)
                committed = []
            for tp in committed:
                keep = []
                for offset, media in self._pending[tp.partition]:
                    (self._stored.add(media) if 0 <= offset < tp.offset else keep.append((offset, media)))
                self._pending[tp.partition] = keep
        self.progress.stored = len(self._stored)
        self.progress.failed = len(self._failed - self._stored)

    def close(self) -> None:
        self._reader.close()
        self._sink_group.close()


def _run_of(original: bytes) -> str:
    """run_id of a dead letter's original event, whatever stage it failed in."""
    for decode in (decode_request, decode_frame):
        try:
            return decode(original).run_id
        except SchemaError:
            continue
    try:
        doc = json.loads(original)
        return str(doc.get("run_id", "")) if isinstance(doc, dict) else ""
    except (ValueError, UnicodeDecodeError):
        return ""

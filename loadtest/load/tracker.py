"""When each media of a load run is stored or dead-lettered, read from Kafka alone.

The tracker reads the run's frames (how many frames each media has), its vector batches (their
offsets) and its dead letters, and asks the sink's consumer group for its committed offsets at
every poll. A frame is stored once the group has committed past its vector batches (the sink
commits only after its store acknowledged the write); a media is stored once all its frames
are, at the time of the poll that saw it (so stored times have the resolution of the poll
interval). A media with a dead letter is failed, with the letter's error class as its cause.

The publish time is the load generator's own clock just before ``produce``; the same process
stamps the stored time, so latency never mixes two machines' clocks. The Kafka timestamps of a
media's frames and vector batches (set by the fetch and embed stages' producers, on this host
too) split the latency into hops.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, TopicPartition

from consumers.registry import SINK_QDRANT
from mediavec.settings import Settings
from schemas import SchemaError, decode_dead_letter, decode_frame, decode_vector_batch
from streams.kafka import consumer, group_id
from streams.topics import topics

logger = logging.getLogger(__name__)


@dataclass
class MediaOutcome:
    """What happened to one published media."""

    published_at: float
    fate: str  # the plan: ok or a failure kind
    frames_expected: int | None = None
    frame_vectors: dict[int, int] = field(default_factory=dict)  # frame index -> vectors stored
    framed_at: float | None = None  # Kafka timestamp of its last frame (the fetch stage's produce)
    vectored_at: float | None = None  # Kafka timestamp of its last vector batch (the embed stage's produce)
    stored_at: float | None = None
    failed_at: float | None = None
    cause: str | None = None

    @property
    def done_at(self) -> float | None:
        return self.failed_at if self.failed_at is not None else self.stored_at

    @property
    def latency_s(self) -> float | None:
        return None if self.stored_at is None or self.failed_at is not None else self.stored_at - self.published_at


@dataclass(frozen=True)
class Stored:
    """Vector batches the sink committed, as seen at one poll."""

    at: float
    frames: int  # frames stored for the first time
    vectors: int


class LoadTracker:
    """Follows the media of one run from the moment it is created; :meth:`expect` each before publishing."""

    def __init__(self, settings: Settings, sink: str = SINK_QDRANT.name) -> None:
        t = topics(settings)
        self._frames, self._vectors, self._dlq = t.frames.name, t.vectors.name, t.dlq.name
        self._reader: Consumer = consumer(settings, f"{settings.topics.prefix}mediavec.load-reader")
        self._sink_group: Consumer = consumer(settings, group_id(settings, sink))
        self._reader.assign(self._at_end([self._frames, self._vectors, self._dlq]))
        self._lock = threading.Lock()
        self.media: dict[str, MediaOutcome] = {}
        self.stored: list[Stored] = []
        self.finished = 0  # media stored or failed (read by the publisher's closed loop)
        self._open: set[str] = set()  # media neither stored nor failed yet
        # vectors partition -> [(offset, media id, frame index, vectors)] not yet committed by the sink
        self._pending: dict[int, list[tuple[int, str, int, int]]] = {}

    def _at_end(self, names: list[str], wait_s: float = 30.0) -> list[TopicPartition]:
        """Every partition at its current end offset, resolved now (not lazily after a publish).

        Topics just created take a moment to show and to elect leaders: retried until ``wait_s``.
        """
        deadline = time.monotonic() + wait_s
        while True:
            try:
                md = self._reader.list_topics(timeout=10).topics
                missing = [name for name in names if name not in md]
                if not missing:
                    return [
                        TopicPartition(name, p, self._reader.get_watermark_offsets(TopicPartition(name, p), 10)[1])
                        for name in names
                        for p in md[name].partitions
                    ]
                problem = f"topics {missing} do not exist"
            except KafkaException as exc:
                problem = str(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"load tracker: {problem}")
            time.sleep(0.2)

    def expect(self, media_id: str, published_at: float, fate: str) -> None:
        """Register a media about to be published (thread-safe: the publisher calls it)."""
        with self._lock:
            self.media[media_id] = MediaOutcome(published_at, fate)
            self._open.add(media_id)

    def outcomes(self) -> dict[str, MediaOutcome]:
        """A copy of every media's outcome so far (safe while the publisher adds media)."""
        with self._lock:
            return dict(self.media)

    def unfinished(self) -> int:
        with self._lock:
            return len(self._open)

    def poll(self, budget_s: float = 0.25) -> None:
        """Read what arrived for up to ``budget_s``, then settle against the sink's committed offsets."""
        end = time.monotonic() + budget_s
        while True:
            left = end - time.monotonic()
            for msg in self._reader.consume(1000, timeout=max(0.0, left)):
                if msg.error() is None:
                    at = msg.timestamp()[1] / 1000
                    self._take(msg.topic() or "", msg.partition() or 0, msg.offset() or 0, msg.value() or b"", at)
            if left <= 0:
                break
        now = time.time()
        self._settle(now)
        self._complete(now)

    def _take(self, topic: str, partition: int, offset: int, value: bytes, at: float) -> None:
        try:
            if topic == self._frames:
                self._take_frame(value, at)
            elif topic == self._vectors:
                self._take_vectors(partition, offset, value, at)
            else:
                self._take_dead_letter(value)
        except SchemaError as exc:
            logger.debug("load tracker: skipping undecodable %s@%d: %s", topic, offset, exc)

    def _outcome(self, media_id: str) -> MediaOutcome | None:
        with self._lock:
            return self.media.get(media_id)

    def _take_frame(self, value: bytes, at: float) -> None:
        frame = decode_frame(value)
        media = self._outcome(frame.media_id)
        if media is not None:
            media.frames_expected = frame.frames_in_media
            media.framed_at = max(at, media.framed_at or at)

    def _take_vectors(self, partition: int, offset: int, value: bytes, at: float) -> None:
        batch = decode_vector_batch(value)
        media = self._outcome(batch.rows[0].media_id) if batch.rows else None
        if media is None:
            return
        media.vectored_at = max(at, media.vectored_at or at)
        row = batch.rows[0]
        self._pending.setdefault(partition, []).append((offset, row.media_id, row.frame_index, len(batch.rows)))

    def _take_dead_letter(self, value: bytes) -> None:
        letter = decode_dead_letter(value)
        media = self._outcome(letter.media_id)
        if media is not None and media.failed_at is None:
            media.failed_at = time.time()
            media.cause = f"{letter.stage}:{letter.error_class}"
            self._close(letter.media_id)

    def _close(self, media_id: str) -> None:
        with self._lock:
            if media_id in self._open:
                self._open.discard(media_id)
                self.finished += 1

    def _settle(self, now: float) -> None:
        if not self._pending:
            return
        tps = [TopicPartition(self._vectors, p) for p in self._pending]
        try:
            committed = self._sink_group.committed(tps, timeout=10)
        except KafkaException as exc:  # coordinator moving: try again at the next poll
            logger.info("load tracker: committed offsets unavailable for now: %s", exc)
            return
        for tp in committed:
            keep = []
            for item in self._pending[tp.partition]:
                offset, media_id, frame_index, n = item
                if 0 <= offset < tp.offset:
                    self._store(media_id, frame_index, n, now)
                else:
                    keep.append(item)
            self._pending[tp.partition] = keep

    def _store(self, media_id: str, frame_index: int, vectors: int, now: float) -> None:
        media = self._outcome(media_id)
        if media is None:
            return
        new = frame_index not in media.frame_vectors
        media.frame_vectors[frame_index] = media.frame_vectors.get(frame_index, 0) + vectors
        self.stored.append(Stored(now, int(new), vectors))

    def _complete(self, now: float) -> None:
        with self._lock:
            open_media = [(media_id, self.media[media_id]) for media_id in self._open]
        for media_id, media in open_media:
            if media.frames_expected is not None and len(media.frame_vectors) >= media.frames_expected:
                media.stored_at = now
                self._close(media_id)

    def close(self) -> None:
        self._reader.close()
        self._sink_group.close()

"""Progress of a run, read from Kafka alone: stored of total, rate, success rate, ETA.

A vector batch of the run counts as stored once the sink's consumer group has committed past
its offset (the sink commits only after its store acknowledged the write and recorded the
offsets). A run's dead letters are read from the DLQ and count as failed; media skipped on
purpose (duplicates of earlier media, on the skipped topic) count as skipped, not as failures:
the success rate is stored / (stored + failed). This works for every store backend and from any
process, while the sinks hold their stores.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

from consumers.registry import SINK_QDRANT
from mediavec.settings import Settings
from schemas import SchemaError, decode_dead_letter, decode_frame, decode_request, decode_vector_batch
from streams.kafka import consumer, group_id, read_to_end
from streams.topics import topics

logger = logging.getLogger(__name__)


@dataclass
class RunProgress:
    total: int
    stored: int = 0
    failed: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)
    causes: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, str] = field(default_factory=dict)  # skipped media id -> the earlier media it repeats

    @property
    def done(self) -> int:
        return self.stored + self.failed + self.skipped

    @property
    def rate(self) -> float:
        return self.done / max(1e-6, time.monotonic() - self.started)

    @property
    def success_rate(self) -> float:
        """Stored of what was processed: skipped duplicates are neither successes nor failures."""
        processed = self.stored + self.failed
        return self.stored / processed if processed else 1.0

    @property
    def eta_s(self) -> float | None:
        return (self.total - self.done) / self.rate if self.rate > 0 else None


class RunTracker:
    """Follows one run on the vectors, DLQ and skipped topics, from the moment it is created."""

    def __init__(
        self,
        settings: Settings,
        run_id: str,
        total: int,
        sink: str = SINK_QDRANT.name,
        sink_group: str | None = None,
        *,
        from_beginning: bool = False,
    ) -> None:
        self.settings = settings
        self.run_id = run_id
        self.progress = RunProgress(total)
        t = topics(settings)
        self._vectors, self._dlq, self._skipped = t.vectors.name, t.dlq.name, t.skipped.name
        self._reader = consumer(settings, f"{settings.topics.prefix}mediavec.progress-reader")
        self._sink_group: Consumer = consumer(settings, sink_group or group_id(settings, sink))
        self._parts = self._partitions()
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END  # beginning: a run already under way
        self._reader.assign([TopicPartition(tp, p, start) for tp, p in self._parts])
        self._pending: dict[int, list[tuple[int, str]]] = {}  # vectors partition -> (offset, media id)
        self._stored: set[str] = set()
        self._failed: set[str] = set()
        self._duplicates: dict[str, str] = {}  # skipped media id -> earlier media id

    def _partitions(self, wait_s: float = 30.0) -> list[tuple[str, int]]:
        """Partitions of the topics it reads; topics just created may take a moment to show."""
        deadline = time.monotonic() + wait_s
        names = (self._vectors, self._dlq, self._skipped)
        while True:
            md = self._reader.list_topics(timeout=10).topics
            missing = [name for name in names if name not in md]
            if not missing:
                return [(name, p) for name in names for p in md[name].partitions]
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
                if _run_of(letter.original_value) != self.run_id:
                    return
                if topic == self._skipped:
                    self._duplicates.setdefault(letter.media_id, letter.details.get("duplicate_of", "?"))
                elif letter.media_id not in self._failed:
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
        # A media with a stored or failed part (another segment of a video) is counted there.
        skipped = {m: e for m, e in self._duplicates.items() if m not in self._stored and m not in self._failed}
        self.progress.skipped = len(skipped)
        self.progress.duplicates = skipped

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


@dataclass(frozen=True)
class RunRequests:
    """What the requests topic says about a run: its distinct media and when it was first published."""

    media: int
    first_published_s: float | None


def run_requests(settings: Settings, run_id: str, timeout_s: float = 10.0) -> RunRequests:
    """Scan the requests topic for a run's events (a publish or a replay run id)."""
    name = topics(settings).requests.name
    media: set[str] = set()
    first: float | None = None
    for msg in read_to_end(settings, name, f"{settings.topics.prefix}mediavec.run-reader", timeout_s=timeout_s):
        try:
            req = decode_request(msg.value() or b"")
        except SchemaError:
            continue
        if req.run_id == run_id:
            media.add(req.media_id)
            at = msg.timestamp()[1] / 1000
            first = at if first is None else min(first, at)
    return RunRequests(len(media), first)


def run_tracker(settings: Settings, run_id: str) -> RunTracker:
    """A tracker for a run already published: total from the requests topic, history from the start."""
    requests = run_requests(settings, run_id)
    if requests.media == 0:
        raise LookupError(f"no request with run id {run_id!r} in {topics(settings).requests.name}")
    tracker = RunTracker(settings, run_id, requests.media, from_beginning=True)
    if requests.first_published_s is not None:  # rate and ETA over the run's whole life
        tracker.progress.started = time.monotonic() - max(0.0, time.time() - requests.first_published_s)
    return tracker


def describe(run_id: str, p: RunProgress, *, named: int = 3) -> str:
    """One line: stored of total, duplicates skipped (naming the earlier media), failures by cause,
    rate, success rate (stored of stored + failed), ETA."""
    causes = ", ".join(f"{k} {v}" for k, v in sorted(p.causes.items(), key=lambda kv: -kv[1]))
    eta = "done" if p.done >= p.total else (f"ETA {p.eta_s:.0f}s" if p.eta_s is not None else "ETA unknown")
    return (
        f"run {run_id}: stored {p.stored} of {p.total}, skipped {p.skipped}"
        + (f" ({_duplicates(p.duplicates, named)})" if p.duplicates else "")
        + f", failed {p.failed}"
        + (f" ({causes})" if causes else "")
        + f", {p.rate:.2f} media/s, success {100 * p.success_rate:.1f}%, {eta}"
    )


def _duplicates(duplicates: dict[str, str], named: int) -> str:
    """``duplicates: b of a, d of c, +3 more`` (skipped media of the earlier media), in media id order."""
    pairs = sorted(duplicates.items())
    text = "duplicates: " + ", ".join(f"{media} of {earlier}" for media, earlier in pairs[:named])
    return text + (f", +{len(pairs) - named} more" if len(pairs) > named else "")

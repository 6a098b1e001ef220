"""Replay a window of media.requests into a new collection version, optionally with another model.

The window (from an offset or a time, to an offset, a time or now) is copied, rewritten to the
target collection with ``reprocess: true`` and the replay's run id, into topics of its own
(``<prefix>replay.<run id>.*``, consumer groups likewise). Fetch and embed workers started for
that namespace (with the replay's model) publish into the live ``vectors`` topic, where the
running sinks store them under ``<target>__<model>``; continuous ingest is untouched. Progress is
followed on the live topics until every replayed request is stored or dead-lettered, then the
namespace's topics are deleted. ``mediavec alias set`` switches searches to the new version.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from tqdm import tqdm

from consumers.registry import EMBED, FETCH, SINK_QDRANT
from mediavec.localworkers import LocalWorkers, follow
from mediavec.progress import RunTracker
from mediavec.settings import Settings
from schemas import SchemaError, decode_request, encode_request
from streams.admin import ensure_topics
from streams.kafka import admin, consumer, group_id, producer
from streams.topics import topics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    topic: str
    starts: dict[int, int]
    ends: dict[int, int]  # exclusive

    @property
    def size(self) -> int:
        return sum(max(0, self.ends[p] - self.starts[p]) for p in self.starts)


def parse_time(text: str) -> int:
    """Unix milliseconds from an ISO-8601 time (UTC if it has no zone) or from epoch seconds."""
    try:
        return int(float(text) * 1000)
    except ValueError:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            from datetime import UTC

            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp() * 1000)


def resolve_window(
    settings: Settings,
    *,
    from_offset: int | None = None,
    from_time_ms: int | None = None,
    to_offset: int | None = None,
    to_time_ms: int | None = None,
) -> Window:
    """Per-partition [start, end) offsets of the requests topic; offsets apply to every partition."""
    name = topics(settings).requests.name
    c = consumer(settings, f"{settings.topics.prefix}mediavec.replay-planner")
    try:
        parts = sorted(c.list_topics(name, timeout=10).topics[name].partitions)
        marks = {p: c.get_watermark_offsets(TopicPartition(name, p), timeout=10) for p in parts}
        starts = _bound(c, name, marks, from_offset, from_time_ms, default_low=True)
        ends = _bound(c, name, marks, to_offset, to_time_ms, default_low=False)
        return Window(name, starts, ends)
    finally:
        c.close()


def _bound(
    c: Consumer,
    name: str,
    marks: dict[int, tuple[int, int]],
    offset: int | None,
    time_ms: int | None,
    *,
    default_low: bool,
) -> dict[int, int]:
    if time_ms is not None:
        found = c.offsets_for_times([TopicPartition(name, p, time_ms) for p in marks], timeout=10)
        return {tp.partition: tp.offset if tp.offset >= 0 else marks[tp.partition][1] for tp in found}
    if offset is not None:
        return {p: min(max(offset, low), high) for p, (low, high) in marks.items()}
    return {p: (low if default_low else high) for p, (low, high) in marks.items()}


def copy_window(
    settings: Settings, replay: Settings, window: Window, *, run_id: str, target: str, source: str | None
) -> int:
    """Copy the window's requests into the replay's requests topic, rewritten; returns how many."""
    c = consumer(settings, group_id(replay, "replay-copy"))
    p = producer(replay)
    out_topic = topics(replay).requests.name
    todo = {tp: end for tp, end in window.ends.items() if end > window.starts[tp]}
    c.assign([TopicPartition(window.topic, part, window.starts[part]) for part in todo])
    copied = 0
    bar = tqdm(total=window.size, unit="req", desc="replay: reading window")
    try:
        while todo:
            for msg in c.consume(500, timeout=1.0):
                if msg.error() is not None or msg.partition() not in todo:
                    continue
                part, offset = msg.partition() or 0, msg.offset() or 0
                if offset >= todo[part]:
                    todo.pop(part, None)
                    continue
                bar.update(1)
                copied += _copy_one(p, out_topic, msg.value() or b"", run_id=run_id, target=target, source=source)
                if offset + 1 >= todo[part]:
                    todo.pop(part, None)
        if p.flush(60):
            raise RuntimeError("replayed requests were not acknowledged")
    finally:
        bar.close()
        c.close()
    return copied


def _copy_one(p: Producer, topic: str, value: bytes, *, run_id: str, target: str, source: str | None) -> int:
    try:
        req = decode_request(value)
    except SchemaError:
        return 0  # it was dead-lettered when first published
    if source is not None and req.collection != source:
        return 0
    new = dataclasses.replace(req, collection=target, run_id=run_id, reprocess=True, published_at=time.time())
    p.produce(topic, key=new.media_id.encode(), value=encode_request(new))
    p.poll(0)
    return 1


def replay_settings(settings: Settings, run_id: str, model_update: dict[str, str]) -> Settings:
    t = settings.topics
    shared = t.sink_prefix if t.sink_prefix is not None else t.prefix
    return settings.model_copy(
        update={
            "topics": t.model_copy(update={"prefix": f"{t.prefix}replay.{run_id}.", "sink_prefix": shared}),
            "model": settings.model.model_copy(update=model_update),
        }
    )


def run_replay(
    settings: Settings,
    window: Window,
    *,
    target: str,
    source: str | None,
    model_update: dict[str, str],
    log_dir: Path,
) -> str:
    """Replay ``window`` into collection ``target``; returns the run id once everything is stored."""
    run_id = time.strftime("replay-%Y%m%d-%H%M%S")
    replay = replay_settings(settings, run_id, model_update)
    ensure_topics(replay)
    total = copy_window(settings, replay, window, run_id=run_id, target=target, source=source)
    logger.info("replay %s: %d requests into collection %s", run_id, total, target)
    if total == 0:
        _drop_topics(replay)
        return run_id
    tracker = RunTracker(replay, run_id, total, sink_group=group_id(settings, SINK_QDRANT.name))
    workers = LocalWorkers(replay, log_dir / run_id, instance=run_id)
    workers.start([FETCH.name, EMBED.name])
    try:
        follow(tracker, workers, unit="req")
    finally:
        workers.stop()
        tracker.close()
        _drop_topics(replay)
    p = tracker.progress
    print(f"replay {run_id}: {p.stored} stored, {p.failed} failed {p.causes or ''} into collection {target!r}")
    return run_id


def _drop_topics(replay: Settings) -> None:
    t = topics(replay)
    names = [t.requests.name, t.frames.name, t.seen.name]
    for name, fut in admin(replay).delete_topics(names, operation_timeout=30).items():
        try:
            fut.result()
        except Exception as exc:  # cleanup only; the run itself succeeded
            logger.warning("could not delete replay topic %s: %s", name, exc)

"""Kafka -> store runner: write, wait for the store's ack, then record the offsets in the store.

Commit order (per batch): split the batch into good records and failures (pure) -> publish the
failures to the DLQ and wait for the broker's ack -> write the good records to the store and
record the next offsets *in the store* (``StoreSink.write``) -> commit the same offsets to the
consumer group, for lag monitoring only. On every assignment the runner seeks to the offsets the
store recorded, so a restart resumes from what the store really holds; deterministic point ids
make any re-read an overwrite. A crash between the DLQ ack and the store write can repeat a DLQ
entry (at least once there), never lose one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from streams import metrics
from streams.batching import Batcher
from streams.dlq import dead_letter
from streams.errors import FatalKafkaError, backoff_s
from streams.kafka import consumer as make_consumer
from streams.kafka import group_id, producer
from streams.logctx import event
from streams.offsets import Offsets, next_offsets
from streams.runner import ISOLATED_TRIES, InstanceLock, default_instance, to_input
from streams.settings import StreamSettings
from streams.stage import Failure, InputRecord, TopicKey, fault_failure
from streams.topics import topics

logger = logging.getLogger(__name__)

MAX_WRITE_TRIES = 3  # whole-batch writes before the batch is isolated record by record


class StoreSink(Protocol):
    name: str
    input_topic: TopicKey

    def start(self) -> None:
        """Open the store (inside the worker process)."""

    def split(self, records: Sequence[InputRecord]) -> tuple[list[InputRecord], list[tuple[InputRecord, Failure]]]:
        """Separate decodable records from failures, with no side effect."""

    def write(self, records: Sequence[InputRecord], offsets: Offsets) -> None:
        """Write records durably, then record ``offsets`` (next offset per partition) in the store."""

    def load_offsets(self) -> Offsets:
        """The offsets this sink recorded in its store."""

    def close(self) -> None: ...


class StoreSinkRunner:
    def __init__(
        self,
        settings: StreamSettings,
        sink: StoreSink,
        *,
        batch_size: int,
        batch_deadline_s: float,
        instance: str | None = None,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.topics = topics(settings)
        self.input = self.topics.by_name(sink.input_topic)
        self.group = group_id(settings, sink.name)
        self.batch_size = batch_size
        self.batch_deadline_s = batch_deadline_s
        self.instance = instance or default_instance()
        self._batcher = Batcher(sink.name, batch_size, batch_deadline_s)
        self._consumer: Consumer | None = None
        self._dlq = producer(settings)
        self.written_batches = 0
        self._committed: Offsets = {}

    def run(self, stop: threading.Event) -> None:
        lock = InstanceLock(self.settings.data_dir / "locks", f"{self.group}.{self.instance}")
        lock.acquire()
        try:
            self._run(stop)
        finally:
            lock.release()

    def _run(self, stop: threading.Event) -> None:
        self.sink.start()
        self._consumer = make_consumer(self.settings, self.group, instance=self.instance)
        self._consumer.subscribe(
            [self.input.name], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        logger.info("%s consuming %s", self.sink.name, self.input.name)
        try:
            while not stop.is_set():
                batch = self._fill(stop)
                if batch:
                    self._apply(batch)
                else:
                    self._commit_idle_positions()
        finally:
            self._consumer.close()
            self._dlq.flush(10)
            self.sink.close()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = self.sink.load_offsets()
        for tp in partitions:
            if (tp.topic, tp.partition) in stored:
                tp.offset = stored[(tp.topic, tp.partition)]
        logger.info("%s assigned %s", self.sink.name, [(tp.partition, tp.offset) for tp in partitions])
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._batcher.drop(partitions)

    def _fill(self, stop: threading.Event) -> list[Message]:
        assert self._consumer is not None
        return self._batcher.fill(self._consumer, stop)

    def _apply(self, batch: list[Message]) -> None:
        assert self._consumer is not None
        records = [to_input(m) for m in batch]
        metrics.EVENTS_IN.labels(self.sink.name).inc(len(records))
        metrics.BATCH_SIZE.labels(self.sink.name).observe(len(records))
        good, failures = self._split(records)
        self._dead_letters(failures)
        offsets = next_offsets(records)
        t0 = time.monotonic()
        self._write(good, offsets)
        metrics.PROCESS_S.labels(self.sink.name).observe(time.monotonic() - t0)
        metrics.EVENTS_OUT.labels(self.sink.name).inc(len(good))
        self.written_batches += 1
        self._advisory_commit(offsets)

    def _split(self, records: list[InputRecord]) -> tuple[list[InputRecord], list[tuple[InputRecord, Failure]]]:
        """The sink's split; if it raises, each record alone, so only the one that raises is dead-lettered."""
        try:
            return self.sink.split(records)
        except Exception as exc:
            logger.warning("%s: split faulted on %d records, isolating: %r", self.sink.name, len(records), exc)
        good: list[InputRecord] = []
        bad: list[tuple[InputRecord, Failure]] = []
        for r in records:
            try:
                ok, failed = self.sink.split([r])
            except Exception as exc:
                bad.append((r, fault_failure(exc, f"{self.sink.name} split")))
                continue
            good.extend(ok)
            bad.extend(failed)
        return good, bad

    def _write(self, good: list[InputRecord], offsets: Offsets) -> None:
        """Write with retries; a write that keeps failing is isolated record by record.

        Isolation tells a store fault from a record's: before a record that failed alone is
        dead-lettered, the store must accept an offsets-only write (the probe). A store that
        refuses the probe is down, and the worker exits for a restart with nothing skipped.
        """
        for attempt in range(1, MAX_WRITE_TRIES + 1):
            try:
                self.sink.write(good, offsets)
                return
            except Exception as exc:
                if attempt == MAX_WRITE_TRIES:
                    logger.warning("%s: write failed %d times, isolating: %r", self.sink.name, attempt, exc)
                    break
                wait = backoff_s(attempt, base=0.5)
                logger.warning("%s: write failed (%r), retry %d in %.1fs", self.sink.name, exc, attempt, wait)
                time.sleep(wait)
        for r in sorted(good, key=lambda r: (r.topic, r.partition, r.offset)):
            self._write_alone(r)
        self.sink.write([], offsets)

    def _write_alone(self, r: InputRecord) -> None:
        tp = (r.topic, r.partition)
        for attempt in range(1, ISOLATED_TRIES + 1):
            try:
                self.sink.split([r])  # the sink may keep what split decoded for the write
                self.sink.write([r], {tp: r.offset + 1})
                return
            except Exception as exc:
                error = exc
                if attempt < ISOLATED_TRIES:
                    time.sleep(backoff_s(attempt, base=0.5))
        self.sink.write([], {tp: r.offset})  # the probe: raises (ends the worker) if the store is down
        self._dead_letters([(r, fault_failure(error, f"{self.sink.name} write"))])
        self.sink.write([], {tp: r.offset + 1})

    def _commit_idle_positions(self) -> None:
        """While idle, let the advisory offsets move past trailing transaction markers."""
        assert self._consumer is not None
        try:
            moved = [
                tp
                for tp in self._consumer.position(self._consumer.assignment())
                if tp.offset >= 0 and self._committed.get((tp.topic, tp.partition)) != tp.offset
            ]
            if moved:
                self._consumer.commit(offsets=moved, asynchronous=True)
                self._committed.update({(tp.topic, tp.partition): tp.offset for tp in moved})
        except KafkaException as exc:
            logger.debug("idle advisory commit failed: %s", exc)

    def _advisory_commit(self, offsets: Offsets) -> None:
        """Commit for lag and progress views only (the store holds the real offsets).

        The consumer's position rather than last+1: it has moved past transaction markers, so a
        sink that has stored everything shows zero lag.
        """
        assert self._consumer is not None
        try:
            wanted = [TopicPartition(t, p) for (t, p) in offsets]
            positions = {(tp.topic, tp.partition): tp.offset for tp in self._consumer.position(wanted)}
            tps = [TopicPartition(t, p, max(o, positions.get((t, p), o))) for (t, p), o in offsets.items()]
            self._consumer.commit(offsets=tps, asynchronous=True)
            self._committed.update({(tp.topic, tp.partition): tp.offset for tp in tps})
        except KafkaException as exc:
            logger.debug("advisory commit failed: %s", exc)

    def _dead_letters(self, failures: list[tuple[InputRecord, Failure]]) -> None:
        if not failures:
            return
        dlq = self.topics.dlq.name
        for record, failure in failures:
            out = dead_letter(record, self.sink.name, failure)
            self._dlq.produce(dlq, key=out.key, value=out.value)
            metrics.DLQ.labels(self.sink.name, failure.error_class).inc()
            media = failure.media_id or (record.key or b"").decode("utf-8", "replace")
            with event(media, record.topic, record.partition, record.offset):
                logger.info("%s: -> DLQ %s: %s", self.sink.name, failure.error_class, failure.reason)
        if self._dlq.flush(30):
            raise FatalKafkaError("dead letters not acknowledged by the broker")

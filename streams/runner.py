"""The consume-transform-produce runner with exactly-once effect between Kafka topics.

Commit order (per batch): begin transaction -> produce every output and dead letter ->
send the consumed offsets to the same transaction -> commit. Downstream consumers read
``read_committed``, so a batch's outputs (a request that fans out into many frames included)
become visible all at once or not at all. On an abortable error the transaction is aborted and
the consumer rewound to the batch's first offsets, so the batch is processed again; a fenced or
fatal producer exits and the supervisor restarts the worker, and so does one whose transactional
call outlives its own timeout (a stuck client: :func:`streams.errors.bounded`). The transactional id is stable per
worker instance, so a restarted worker aborts whatever its killed predecessor left open.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from schemas import Header
from streams import metrics
from streams.batching import Batcher
from streams.dlq import dead_letter
from streams.errors import Action, ClientHung, FatalKafkaError, backoff_s, bounded, classify
from streams.kafka import consumer as make_consumer
from streams.kafka import group_id, transactional_producer
from streams.logctx import event
from streams.offsets import next_offsets, topic_partitions
from streams.pause import clear_pauses, pause_until_available
from streams.settings import StreamSettings
from streams.stage import (
    Failure,
    InputRecord,
    OutputRecord,
    Result,
    RetryBatch,
    Stage,
    StageLifecycle,
    StageUnavailable,
    fault_failure,
)
from streams.topics import topics

logger = logging.getLogger(__name__)

MAX_STAGE_RETRIES = 5
MAX_COMMIT_RETRIES = 5
TXN_CALL_S = 60  # the timeout each transactional call is given
HUNG_AFTER_S = TXN_CALL_S + 30  # a call not back by then never will be: the worker exits (streams.errors.bounded)
ISOLATED_TRIES = 2  # a record processed alone that faults this often is that record's fault


def _header_pairs(msg: Message) -> list[tuple[str, str | bytes | None]]:
    raw = msg.headers() or []
    return list(raw.items()) if isinstance(raw, dict) else list(raw)


def to_input(msg: Message) -> InputRecord:
    headers = tuple(Header(k, v.encode() if isinstance(v, str) else v) for k, v in _header_pairs(msg))
    return InputRecord(
        topic=msg.topic() or "",
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        key=msg.key(),
        value=msg.value() or b"",
        headers=headers,
        timestamp_ms=msg.timestamp()[1],
    )


class InstanceLock:
    """One worker per transactional id on a host: two would fence each other forever."""

    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{name}.lock"
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        fh = self.path.open("w")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise RuntimeError(
                f"worker instance {self.path.stem} already runs on this host; pass another --instance"
            ) from None
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class TransactionalLoop(ABC):
    """What every Kafka-to-Kafka runner shares: the group member, the transactional producer,
    the instance lock, committing outputs with offsets in one transaction, and lag metrics.

    A subclass decides what one :meth:`_step` of the poll loop does.
    """

    def __init__(self, settings: StreamSettings, stage: StageLifecycle, *, instance: str | None = None) -> None:
        self.settings = settings
        self.lifecycle = stage
        self.topics = topics(settings)
        self.input = self.topics.by_name(stage.input_topic)
        self.group = group_id(settings, stage.name)
        self.instance = instance or default_instance()
        self.transactional_id = f"{self.group}.{self.instance}"
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._last_lag_update = 0.0
        self.committed_batches = 0
        self._stop = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        lock = InstanceLock(self.settings.data_dir / "locks", self.transactional_id)
        lock.acquire()
        hung = False
        try:
            self.lifecycle.start()
            producer = self._producer = transactional_producer(self.settings, self.transactional_id)
            bounded(lambda: producer.init_transactions(TXN_CALL_S), HUNG_AFTER_S, "init_transactions")
            self._consumer = make_consumer(self.settings, self.group, instance=self.instance)
            self._consumer.subscribe([self.input.name], on_revoke=self._revoked, on_lost=self._revoked)
            logger.info("%s worker %s consuming %s", self.lifecycle.name, self.transactional_id, self.input.name)
            while not stop.is_set():
                self._step(stop)
                self._update_lag()
        except ClientHung:
            hung = True  # a clean shutdown would call into the stuck client and wait with it
            raise
        finally:
            if not hung:
                self._shutdown()
            lock.release()

    @abstractmethod
    def _step(self, stop: threading.Event) -> None:
        """One turn of the poll loop: poll, hand work to the stage, commit what is ready."""

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._on_revoke(consumer, partitions)
        clear_pauses(consumer, partitions)

    @abstractmethod
    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Forget uncommitted work of revoked (or lost) partitions: their new owner redoes it."""

    def _shutdown(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
        if self._producer is not None:
            self._producer.flush(10)
        self.lifecycle.close()

    def _tell_stage(self, ok: bool) -> None:
        hook = getattr(self.lifecycle, "committed" if ok else "aborted", None)
        if hook is not None:
            hook()

    def _outputs(
        self, records: list[InputRecord], results: Sequence[list[OutputRecord] | Failure]
    ) -> list[OutputRecord]:
        out: list[OutputRecord] = []
        for record, result in zip(records, results, strict=True):
            if isinstance(result, Failure):
                media = result.media_id or (record.key or b"").decode("utf-8", "replace")
                with event(media, record.topic, record.partition, record.offset):
                    logger.info("%s: -> DLQ %s: %s", self.lifecycle.name, result.error_class, result.reason)
                out.append(dead_letter(record, self.lifecycle.name, result))
            else:
                out.extend(result)
        return out

    def _count_out(self, outputs: list[OutputRecord], results: Sequence[list[OutputRecord] | Failure]) -> None:
        name = self.lifecycle.name
        metrics.EVENTS_OUT.labels(name).inc(sum(1 for o in outputs if o.topic != "dlq"))
        for r in results:
            if isinstance(r, Failure):
                metrics.DLQ.labels(name, r.error_class).inc()

    # -- one transaction ------------------------------------------------------------------------

    def _commit(self, outputs: list[OutputRecord], offsets: list[TopicPartition]) -> bool:
        """Produce outputs and commit ``offsets`` in one transaction; False means rewind."""
        assert self._producer is not None and self._consumer is not None
        producer = self._producer
        name = self.lifecycle.name
        try:
            producer.begin_transaction()
            for o in outputs:
                self._produce(o)
            group = self._consumer.consumer_group_metadata()
            bounded(
                lambda: producer.send_offsets_to_transaction(offsets, group, TXN_CALL_S),
                HUNG_AFTER_S,
                "send_offsets_to_transaction",
            )
            self._commit_with_retries()
            metrics.TXN.labels(name, "commit").inc()
            return True
        except KafkaException as exc:
            action = classify(exc)
            if action is Action.FATAL:
                raise FatalKafkaError(f"{name}: {exc}") from exc
            logger.warning("%s: aborting transaction (%s)", name, exc)
            self._abort()
            return False

    def _commit_with_retries(self) -> None:
        producer = self._producer
        assert producer is not None
        for attempt in range(1, MAX_COMMIT_RETRIES + 1):
            try:
                bounded(lambda: producer.commit_transaction(TXN_CALL_S), HUNG_AFTER_S, "commit_transaction")
                return
            except KafkaException as exc:
                if classify(exc) is not Action.RETRY or attempt == MAX_COMMIT_RETRIES:
                    raise
                time.sleep(backoff_s(attempt))

    def _abort(self) -> None:
        producer = self._producer
        assert producer is not None
        try:
            bounded(lambda: producer.abort_transaction(TXN_CALL_S), HUNG_AFTER_S, "abort_transaction")
            metrics.TXN.labels(self.lifecycle.name, "abort").inc()
        except KafkaException as exc:
            if classify(exc) is Action.FATAL:
                raise FatalKafkaError(str(exc)) from exc
            raise

    def _produce(self, o: OutputRecord) -> None:
        assert self._producer is not None
        name = self.topics.by_name(o.topic).name
        headers: list[tuple[str, str | bytes | None]] = [(h.key, h.value) for h in o.headers]
        while True:
            try:
                self._producer.produce(name, key=o.key, value=o.value, headers=headers or None)
                return
            except BufferError:
                self._producer.poll(0.1)  # local queue full: let deliveries drain

    def _seek(self, first: dict[tuple[str, int], int]) -> None:
        """Seek each still-assigned partition back to ``first[(topic, partition)]``."""
        assert self._consumer is not None
        assigned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        for (topic, partition), offset in first.items():
            if (topic, partition) in assigned:
                try:
                    self._consumer.seek(TopicPartition(topic, partition, offset))
                except KafkaException as exc:
                    logger.warning("rewind of %s/%d failed: %s", topic, partition, exc)

    def _update_lag(self) -> None:
        now = time.monotonic()
        if self._consumer is None or now - self._last_lag_update < 5:
            return
        self._last_lag_update = now
        try:
            for tp in self._consumer.position(self._consumer.assignment()):
                _, high = self._consumer.get_watermark_offsets(tp, cached=True)
                if tp.offset >= 0 and high >= 0:
                    metrics.LAG.labels(self.lifecycle.name, tp.topic, str(tp.partition)).set(max(0, high - tp.offset))
        except KafkaException as exc:
            logger.debug("lag update failed: %s", exc)


class TransactionalRunner(TransactionalLoop):
    """Runs one :class:`Stage` batch by batch as a member of its consumer group until ``stop`` is set."""

    def __init__(
        self,
        settings: StreamSettings,
        stage: Stage,
        *,
        batch_size: int,
        batch_deadline_s: float,
        instance: str | None = None,
    ) -> None:
        super().__init__(settings, stage, instance=instance)
        self.stage = stage
        self.batch_size = batch_size
        self.batch_deadline_s = batch_deadline_s
        self._batcher = Batcher(stage.name, batch_size, batch_deadline_s)

    def _step(self, stop: threading.Event) -> None:
        assert self._consumer is not None
        batch = self._batcher.fill(self._consumer, stop)
        if batch:
            self._process(batch)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._batcher.drop(partitions)

    def _process(self, batch: list[Message]) -> None:
        records = [to_input(m) for m in batch]
        metrics.EVENTS_IN.labels(self.stage.name).inc(len(records))
        metrics.BATCH_SIZE.labels(self.stage.name).observe(len(records))
        results = self._transform(records)
        if results is None:
            self._rewind(batch)
            return
        outputs = self._outputs(records, results)
        ok = self._commit(outputs, topic_partitions(next_offsets(records)))
        self._tell_stage(ok)
        if ok:
            self.committed_batches += 1
            self._count_out(outputs, results)
        else:
            self._rewind(batch)

    def _transform(self, records: list[InputRecord]) -> Sequence[list[OutputRecord] | Failure] | None:
        """The stage's results for the batch; a fault the stage cannot place on a record is isolated.

        ``StageUnavailable`` (a service the stage needs is down) pauses consumption until it is back,
        then the batch is redone. ``RetryBatch`` (a transient fault) is retried with backoff; any
        other exception, or a batch that keeps asking for a retry, is isolated: each record is
        processed alone, and one that makes the stage raise by itself becomes its own
        ``stage_fault`` dead letter. So no record can stop the worker, and the good records of the
        batch go on.
        """
        for attempt in range(1, MAX_STAGE_RETRIES + 1):
            t0 = time.monotonic()
            try:
                results = self.stage.process(records)
            except StageUnavailable as down:
                assert self._consumer is not None
                pause_until_available(self._consumer, self.stage.name, down, self._stop)
                return None  # rewound: processed again once the service is back
            except RetryBatch as exc:
                wait = backoff_s(attempt, base=0.5)
                logger.warning(
                    "%s: batch retry %d/%d in %.1fs: %s", self.stage.name, attempt, MAX_STAGE_RETRIES, wait, exc
                )
                time.sleep(wait)
                continue
            except Exception as exc:
                logger.warning("%s: stage fault on a batch of %d, isolating: %r", self.stage.name, len(records), exc)
                return self._isolate(records)
            metrics.PROCESS_S.labels(self.stage.name).observe(time.monotonic() - t0)
            return self._checked(results, records)
        return self._isolate(records)

    def _checked(self, results: Sequence[Result], records: Sequence[InputRecord]) -> Sequence[Result]:
        if len(results) != len(records):
            raise RuntimeError(f"{self.stage.name} returned {len(results)} results for {len(records)} inputs")
        return results

    def _isolate(self, records: list[InputRecord]) -> list[Result] | None:
        """Process each record alone (twice at most); a record that still faults is dead-lettered.
        None when a service the stage needs went down meanwhile (paused, then the batch is redone)."""
        results: list[Result] = []
        for record in records:
            for attempt in range(1, ISOLATED_TRIES + 1):
                try:
                    results.extend(self._checked(self.stage.process([record]), [record]))
                    break
                except StageUnavailable as down:
                    assert self._consumer is not None
                    pause_until_available(self._consumer, self.stage.name, down, self._stop)
                    return None
                except Exception as exc:
                    if attempt < ISOLATED_TRIES:
                        time.sleep(backoff_s(attempt, base=0.5))
                        continue
                    media = (record.key or b"").decode("utf-8", "replace")
                    with event(media, record.topic, record.partition, record.offset):
                        logger.warning("%s: record faults the stage alone: %r", self.stage.name, exc)
                    results.append(fault_failure(exc, f"stage {self.stage.name}"))
        return results

    def _rewind(self, batch: list[Message]) -> None:
        """Seek every partition of the batch back to its first offset, to process it again."""
        first: dict[tuple[str, int], int] = {}
        for m in batch:
            key = (m.topic() or "", m.partition() or 0)
            first[key] = min(first.get(key, m.offset() or 0), m.offset() or 0)
        self._seek(first)
        self._batcher.clear()


def default_instance() -> str:
    return os.environ.get("HOSTNAME") or socket.gethostname()

"""A Kafka-to-Kafka runner that keeps work in flight across commits.

:class:`~streams.runner.TransactionalRunner` processes a batch and commits it whole, so one slow
input (a download that drips until its deadline) holds every other input of its batch, and the
stage sits idle while it waits. :class:`PipelinedRunner` instead submits each polled input to a
:class:`~streams.stage.PipelinedStage` as soon as it arrives, keeps up to ``max_in_flight``
submitted and uncommitted at a time, and commits, per partition, the contiguous run of finished
inputs from the oldest uncommitted offset (STYLE.md rule 7). Inputs behind a slow one keep
downloading and are committed the moment it finishes; other partitions never wait for it.

Commit order (per commit): take the finished front of every partition -> ``stage.finish`` turns
them into results in offset order (so anything order-dependent, such as dedup claims, is
deterministic) -> begin transaction -> produce outputs and dead letters -> send each partition's
next offset -> commit. On an abortable error the transaction is aborted, all uncommitted work is
dropped, and every partition is sought back to its oldest uncommitted offset; a fault of the
stage itself (a failed future) does the same after a backoff, and exits for a restart after
``MAX_STAGE_RETRIES`` in a row. A revoked partition's work is dropped: its new owner starts from
the committed offset. When ``max_in_flight`` inputs are buffered beyond the submitted ones, the
assigned partitions are paused until the backlog drains (polling continues, so the member stays
in its group).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from streams import metrics
from streams.errors import FatalKafkaError, backoff_s, is_fatal
from streams.runner import MAX_STAGE_RETRIES, TransactionalLoop, to_input
from streams.settings import Settings
from streams.stage import InputRecord, PipelinedStage, RetryBatch

logger = logging.getLogger(__name__)

TP = tuple[str, int]


@dataclass
class _Entry:
    record: InputRecord
    future: concurrent.futures.Future[Any] | None = None  # None until submitted
    arrived: float = field(default_factory=time.monotonic)


class PipelinedRunner(TransactionalLoop):
    """Runs one :class:`PipelinedStage` as a member of its consumer group until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        stage: PipelinedStage,
        *,
        max_in_flight: int,
        commit_size: int,
        commit_interval_s: float,
        instance: str | None = None,
    ) -> None:
        super().__init__(settings, stage, instance=instance)
        if max_in_flight < 1 or commit_size < 1:
            raise ValueError("max_in_flight and commit_size must be at least 1")
        self.stage = stage
        self.max_in_flight = max_in_flight
        self.commit_size = commit_size
        self.commit_interval_s = commit_interval_s
        self._partitions: dict[TP, deque[_Entry]] = {}  # uncommitted inputs, in offset order
        self._waiting: deque[_Entry] = deque()  # polled, not yet submitted, in arrival order
        self._submitted = 0  # submitted and not yet committed (finished ones included)
        self._paused: list[TopicPartition] = []
        self._last_commit = time.monotonic()
        self._faults = 0  # stage faults in a row

    # -- the loop -------------------------------------------------------------------------------

    def _step(self, stop: threading.Event) -> None:
        self._poll()
        self._submit_waiting()
        if self._stage_fault():
            return
        self._commit_front()
        self._wait_a_little()

    def _poll(self) -> None:
        assert self._consumer is not None
        self._apply_backpressure()
        room = max(1, self.max_in_flight - len(self._waiting))
        timeout = 0.0 if self._submitted or self._waiting else 0.5
        for m in self._consumer.consume(min(room, 500), timeout=timeout):
            err = m.error()
            if err is None:
                self._add(m)
            elif is_fatal(err):
                raise FatalKafkaError(str(err))
            elif err.code() != KafkaError._PARTITION_EOF:
                logger.warning("%s: consumer error: %s", self.stage.name, err)

    def _add(self, msg: Message) -> None:
        entry = _Entry(to_input(msg))
        tp = (entry.record.topic, entry.record.partition)
        self._partitions.setdefault(tp, deque()).append(entry)
        self._waiting.append(entry)
        metrics.EVENTS_IN.labels(self.stage.name).inc()

    def _apply_backpressure(self) -> None:
        """Pause every assigned partition while a full round waits unsubmitted; resume after."""
        assert self._consumer is not None
        if len(self._waiting) >= self.max_in_flight:
            paused = {(tp.topic, tp.partition) for tp in self._paused}
            more = [tp for tp in self._consumer.assignment() if (tp.topic, tp.partition) not in paused]
            if more:
                self._consumer.pause(more)
                self._paused.extend(more)
        elif self._paused:
            still = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
            self._consumer.resume([tp for tp in self._paused if (tp.topic, tp.partition) in still])
            self._paused = []

    def _submit_waiting(self) -> None:
        while self._waiting and self._submitted < self.max_in_flight:
            entry = self._waiting.popleft()
            try:
                entry.future = self.stage.submit(entry.record)
            except RetryBatch as exc:
                entry.future = concurrent.futures.Future()
                entry.future.set_exception(exc)
            self._submitted += 1

    def _wait_a_little(self) -> None:
        """Wait up to 50 ms for a submitted input to finish, instead of spinning on the consumer."""
        metrics.IN_FLIGHT.labels(self.stage.name).set(self._submitted + len(self._waiting))
        pending = [f for f in self._futures() if not f.done()]
        if pending:
            concurrent.futures.wait(pending, timeout=0.05, return_when=concurrent.futures.FIRST_COMPLETED)

    def _futures(self) -> Iterator[concurrent.futures.Future[Any]]:
        for queue in self._partitions.values():
            for entry in queue:
                if entry.future is not None:
                    yield entry.future

    # -- commits --------------------------------------------------------------------------------

    def _front(self) -> list[_Entry]:
        """The finished inputs at the head of every partition, in offset order per partition."""
        front: list[_Entry] = []
        for queue in self._partitions.values():
            for entry in queue:
                if entry.future is None or not entry.future.done():
                    break
                front.append(entry)
        return front

    def _commit_front(self) -> None:
        front = self._front()
        if not front:
            return
        everything = len(front) == self._submitted  # nothing submitted is still running
        due = time.monotonic() - self._last_commit >= self.commit_interval_s
        if len(front) < self.commit_size and not (due or everything):
            return
        records = [e.record for e in front]
        results = self.stage.finish([(e.record, e.future.result()) for e in front if e.future is not None])
        if len(results) != len(records):
            raise RuntimeError(f"{self.stage.name} returned {len(results)} results for {len(records)} inputs")
        outputs = self._outputs(records, results)
        metrics.BATCH_SIZE.labels(self.stage.name).observe(len(records))
        ok = self._commit(outputs, _next_offsets(records))
        self._tell_stage(ok)
        self._last_commit = time.monotonic()
        if not ok:
            self._redo_uncommitted()
            return
        self.committed_batches += 1
        self._count_out(outputs, results)
        for e in front:
            self._partitions[(e.record.topic, e.record.partition)].popleft()
            metrics.INPUT_S.labels(self.stage.name).observe(self._last_commit - e.arrived)
        metrics.BATCH_FILL_S.labels(self.stage.name).observe(self._last_commit - min(e.arrived for e in front))
        self._submitted -= len(front)
        self._faults = 0

    def _stage_fault(self) -> bool:
        """A failed future is a transient fault of the stage: redo everything uncommitted."""
        failed = next((f for f in self._futures() if f.done() and f.exception() is not None), None)
        if failed is None:
            return False
        self._faults += 1
        if self._faults > MAX_STAGE_RETRIES:
            raise FatalKafkaError(f"{self.stage.name}: {MAX_STAGE_RETRIES} faults in a row; exiting for a restart")
        wait = backoff_s(self._faults, base=0.5)
        logger.warning(
            "%s: stage fault, redoing uncommitted input (%d/%d) in %.1fs: %s",
            self.stage.name,
            self._faults,
            MAX_STAGE_RETRIES,
            wait,
            failed.exception(),
        )
        self._redo_uncommitted()
        time.sleep(wait)
        return True

    def _redo_uncommitted(self) -> None:
        """Drop every uncommitted input and seek each partition back to its oldest one."""
        first = {tp: q[0].record.offset for tp, q in self._partitions.items() if q}
        self._drop(set(self._partitions))
        self._seek(first)

    def _drop(self, partitions: set[TP]) -> None:
        dropped = 0
        for tp in partitions:
            for entry in self._partitions.pop(tp, deque()):
                if entry.future is not None:
                    entry.future.cancel()
                    self._submitted -= 1
                dropped += 1
        self._waiting = deque(e for e in self._waiting if (e.record.topic, e.record.partition) not in partitions)
        if dropped:
            logger.info("%s: dropped %d uncommitted inputs; they are read again", self.stage.name, dropped)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drop({(tp.topic, tp.partition) for tp in partitions})
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._paused = [tp for tp in self._paused if (tp.topic, tp.partition) not in gone]

    def _shutdown(self) -> None:
        self._drop(set(self._partitions))
        super()._shutdown()


def _next_offsets(records: list[InputRecord]) -> list[TopicPartition]:
    nxt: dict[TP, int] = {}
    for r in records:
        nxt[(r.topic, r.partition)] = max(nxt.get((r.topic, r.partition), 0), r.offset + 1)
    return [TopicPartition(t, p, o) for (t, p), o in nxt.items()]

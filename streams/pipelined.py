"""A Kafka-to-Kafka runner that keeps work in flight across commits.

:class:`~streams.runner.TransactionalRunner` processes a batch and commits it whole, so one slow
input (a download that drips until its deadline) holds every other input of its batch, and the
stage sits idle while it waits. :class:`PipelinedRunner` instead submits each polled input to a
:class:`~streams.stage.PipelinedStage` as soon as it arrives, keeps up to ``max_in_flight``
running at a time, and commits, per partition, the contiguous run of finished
inputs from the oldest uncommitted offset (STYLE.md rule 7). Inputs behind a slow one keep
downloading and are committed the moment it finishes; other partitions never wait for it.

Commit order (per commit): take the finished front of every partition -> ``stage.finish`` turns
them into results in offset order (so anything order-dependent, such as dedup claims, is
deterministic) -> begin transaction -> produce outputs and dead letters -> send each partition's
next offset -> commit. On an abortable error the transaction is aborted, all uncommitted work is
dropped, and every partition is sought back to its oldest uncommitted offset; a fault of the
stage itself (a failed future) does the same after a backoff, and exits for a restart after
``MAX_STAGE_RETRIES`` in a row. A revoked partition's work is dropped: its new owner starts from
the committed offset.

Limits: at most ``max_in_flight`` inputs run at once, all partitions together, and each partition
holds at most ``max_in_flight`` submitted, uncommitted inputs (so the results buffered behind one
slow input are bounded, and they occupy only their own partition's share: a partition stuck
behind a download that drips until its deadline never starves the others). Waiting partitions
submit in turn. A partition with ``max_in_flight`` inputs polled and not yet submitted is paused
until half of them have gone (polling continues, so the member stays in its group).
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
from streams.logctx import event
from streams.offsets import next_offsets, topic_partitions
from streams.runner import ISOLATED_TRIES, MAX_STAGE_RETRIES, TransactionalLoop, to_input
from streams.settings import StreamSettings
from streams.stage import Failure, InputRecord, PipelinedStage, Result, RetryBatch, fault_failure

logger = logging.getLogger(__name__)

TP = tuple[str, int]


@dataclass
class _Entry:
    record: InputRecord
    future: concurrent.futures.Future[Any] | None = None  # None until submitted
    arrived: float = field(default_factory=time.monotonic)
    tries: int = 0  # submissions whose future raised
    failure: Failure | None = None  # set once the record faulted the stage alone: its dead letter


class PipelinedRunner(TransactionalLoop):
    """Runs one :class:`PipelinedStage` as a member of its consumer group until ``stop`` is set."""

    def __init__(
        self,
        settings: StreamSettings,
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
        self._partitions: dict[TP, deque[_Entry]] = {}  # submitted, uncommitted inputs, in offset order
        self._waiting: dict[TP, deque[_Entry]] = {}  # polled, not yet submitted, in offset order
        self._turn = 0  # which partition submits first in the next round
        self._paused: dict[TP, TopicPartition] = {}
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
        timeout = 0.0 if self._waiting or self._held() else 0.5
        for m in self._consumer.consume(min(self.max_in_flight, 500), timeout=timeout):
            err = m.error()
            if err is None:
                self._add(m)
            elif is_fatal(err):
                raise FatalKafkaError(str(err))
            elif err.code() != KafkaError._PARTITION_EOF:
                logger.warning("%s: consumer error: %s", self.stage.name, err)

    def _add(self, msg: Message) -> None:
        entry = _Entry(to_input(msg))
        self._waiting.setdefault((entry.record.topic, entry.record.partition), deque()).append(entry)
        metrics.EVENTS_IN.labels(self.stage.name).inc()

    def _apply_backpressure(self) -> None:
        """Pause a partition while ``max_in_flight`` of its inputs wait unsubmitted; resume at half.

        Per partition, so a partition held back by a slow input never stops the others' reads.
        """
        assert self._consumer is not None
        stop = [
            TopicPartition(*tp)
            for tp, q in self._waiting.items()
            if len(q) >= self.max_in_flight and tp not in self._paused
        ]
        go = [tp for tp in self._paused if len(self._waiting.get(tp, ())) < self.max_in_flight / 2]
        if stop:
            self._consumer.pause(stop)
            self._paused.update({(tp.topic, tp.partition): tp for tp in stop})
        if go:
            self._consumer.resume([self._paused.pop(tp) for tp in go])

    def _submit_waiting(self) -> None:
        """Submit waiting inputs, one per partition in turn, within both limits.

        At most ``max_in_flight`` inputs run at once (all partitions together), and a partition
        holds at most ``max_in_flight`` submitted and uncommitted inputs. Finished inputs behind a
        slow one count against their own partition only, so they cannot take the running slots
        every other partition needs until the slow one ends.
        """
        running = sum(1 for f in self._futures() if not f.done())
        order = list(self._waiting)
        if not order:
            return
        self._turn = (self._turn + 1) % len(order)
        order = order[self._turn :] + order[: self._turn]
        progress = True
        while progress and running < self.max_in_flight:
            progress = False
            for tp in order:
                waiting = self._waiting.get(tp)
                held = self._partitions.setdefault(tp, deque())
                if not waiting or len(held) >= self.max_in_flight or running >= self.max_in_flight:
                    continue
                entry = waiting.popleft()
                self._submit(entry)
                held.append(entry)
                running += 1
                progress = True
        for tp in [tp for tp, q in self._waiting.items() if not q]:
            del self._waiting[tp]

    def _submit(self, entry: _Entry) -> None:
        try:
            entry.future = self.stage.submit(entry.record)
        except Exception as exc:  # RetryBatch (the stage is down) or a fault of this record
            entry.future = concurrent.futures.Future()
            entry.future.set_exception(exc)

    def _wait_a_little(self) -> None:
        """Wait up to 50 ms for a submitted input to finish, instead of spinning on the consumer."""
        waiting = sum(len(q) for q in self._waiting.values())
        metrics.IN_FLIGHT.labels(self.stage.name).set(self._held() + waiting)
        pending = [f for f in self._futures() if not f.done()]
        if pending:
            concurrent.futures.wait(pending, timeout=0.05, return_when=concurrent.futures.FIRST_COMPLETED)

    def _held(self) -> int:
        return sum(len(q) for q in self._partitions.values())

    def _entries(self) -> Iterator[_Entry]:
        for queue in self._partitions.values():
            yield from queue

    def _futures(self) -> Iterator[concurrent.futures.Future[Any]]:
        for entry in self._entries():
            if entry.future is not None:
                yield entry.future

    # -- commits --------------------------------------------------------------------------------

    def _front(self) -> list[_Entry]:
        """The finished inputs at the head of every partition, in offset order per partition."""
        front: list[_Entry] = []
        for queue in self._partitions.values():
            for entry in queue:
                if entry.future is None or not entry.future.done() or _raised(entry.future):
                    break  # a fault is handled by _stage_fault first
                front.append(entry)
        return front

    def _commit_front(self) -> None:
        front = self._front()
        if not front:
            return
        everything = len(front) == self._held()  # nothing submitted is still running
        due = time.monotonic() - self._last_commit >= self.commit_interval_s
        if len(front) < self.commit_size and not (due or everything):
            return
        records = [e.record for e in front]
        results = self._finish(front)
        outputs = self._outputs(records, results)
        metrics.BATCH_SIZE.labels(self.stage.name).observe(len(records))
        ok = self._commit(outputs, topic_partitions(next_offsets(records)))
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
        self._faults = 0

    def _finish(self, front: list[_Entry]) -> list[Result]:
        """``stage.finish`` for the front; entries that faulted alone keep their dead letters.

        If ``finish`` raises, each entry is finished alone, so only the one that raises is lost
        to a ``stage_fault`` dead letter.
        """
        todo = [e for e in front if e.failure is None]
        try:
            finished = self._checked_finish(todo)
        except Exception as exc:
            logger.warning("%s: finish faulted on %d inputs, isolating: %r", self.stage.name, len(todo), exc)
            finished = []
            for e in todo:
                try:
                    finished.extend(self._checked_finish([e]))
                except Exception as alone:
                    finished.append(fault_failure(alone, f"{self.stage.name} finish"))
        done = iter(finished)
        return [e.failure if e.failure is not None else next(done) for e in front]

    def _checked_finish(self, entries: list[_Entry]) -> list[Result]:
        results = self.stage.finish([(e.record, e.future.result()) for e in entries if e.future is not None])
        if len(results) != len(entries):
            raise RuntimeError(f"{self.stage.name} returned {len(results)} results for {len(entries)} inputs")
        return results

    def _stage_fault(self) -> bool:
        """Handle failed futures: a record's own fault is retried, then dead-lettered; True if the
        stage itself is down (``RetryBatch``), in which case everything uncommitted is redone."""
        failed = [e for e in self._entries() if e.future is not None and e.future.done() and _raised(e.future)]
        down = next((e for e in failed if isinstance(e.future.exception(), RetryBatch)), None)  # type: ignore[union-attr]
        if down is not None:
            return self._stage_down(down.future.exception())  # type: ignore[union-attr]
        for entry in failed:
            self._record_fault(entry)
        return False

    def _record_fault(self, entry: _Entry) -> None:
        assert entry.future is not None
        exc = entry.future.exception()
        assert exc is not None
        entry.tries += 1
        r = entry.record
        if entry.tries < ISOLATED_TRIES:
            logger.warning("%s: input %s/%d@%d faulted (%r); trying it again", self.stage.name, *_at(r), exc)
            self._submit(entry)
            return
        with event((r.key or b"").decode("utf-8", "replace"), r.topic, r.partition, r.offset):
            logger.warning("%s: input faults the stage alone, dead-lettering it: %r", self.stage.name, exc)
        entry.failure = fault_failure(exc, f"stage {self.stage.name}")
        entry.future = concurrent.futures.Future()
        entry.future.set_result(None)

    def _stage_down(self, exc: BaseException | None) -> bool:
        """The stage cannot take work (its loop died): redo everything uncommitted, in a while."""
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
            exc,
        )
        self._redo_uncommitted()
        time.sleep(wait)
        return True

    def _redo_uncommitted(self) -> None:
        """Drop every uncommitted input and seek each partition back to its oldest one."""
        first = {tp: q[0].record.offset for tp, q in self._partitions.items() if q}
        for tp, q in self._waiting.items():
            if q and tp not in first:
                first[tp] = q[0].record.offset
        self._drop(set(self._partitions) | set(self._waiting))
        self._seek(first)

    def _drop(self, partitions: set[TP]) -> None:
        dropped = 0
        for tp in partitions:
            for entry in self._partitions.pop(tp, deque()):
                if entry.future is not None:
                    entry.future.cancel()
                dropped += 1
            dropped += len(self._waiting.pop(tp, ()))
        if dropped:
            logger.info("%s: dropped %d uncommitted inputs; they are read again", self.stage.name, dropped)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._drop(gone)
        for tp in gone:
            self._paused.pop(tp, None)

    def _shutdown(self) -> None:
        self._drop(set(self._partitions) | set(self._waiting))
        super()._shutdown()


def _raised(future: concurrent.futures.Future[Any]) -> bool:
    return not future.cancelled() and future.exception() is not None


def _at(record: InputRecord) -> tuple[str, int, int]:
    return record.topic, record.partition, record.offset

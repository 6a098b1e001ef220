"""The contract between the Kafka runner and a stage's pure transform.

A stage receives a batch of :class:`InputRecord` (already polled, in offset order per
partition) and returns one result per input, in the same order: a list of
:class:`OutputRecord` (possibly empty) or a :class:`Failure`, which the runner routes to the
DLQ with the original bytes. Nothing here imports Kafka, so transforms are testable in a line.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from schemas.codec import encode_dead_letter
from schemas.models import DeadLetter, Header

TopicKey = Literal["requests", "frames", "vectors", "dlq", "seen", "skipped"]


@dataclass(frozen=True)
class InputRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[Header, ...] = ()
    timestamp_ms: int = 0


@dataclass(frozen=True)
class OutputRecord:
    topic: TopicKey  # logical topic, resolved by streams.topics
    key: bytes
    value: bytes
    headers: tuple[Header, ...] = ()


@dataclass(frozen=True)
class Failure:
    """Input that can never succeed as it is: goes to the DLQ, never retried by the runner."""

    error_class: str  # stable, machine-readable: http_404, not_an_image, pixel_bomb, ...
    reason: str  # readable, free of secrets
    media_id: str = ""
    details: dict[str, str] = field(default_factory=dict)


Result = list[OutputRecord] | Failure


class RetryBatch(Exception):
    """Raised by a transform when the whole batch should be retried (a transient fault)."""


class StageUnavailable(RetryBatch):
    """A service the stage depends on is down (a remote embedding provider): stop consuming.

    The runner rewinds the batch, pauses its partitions (still polling, so it keeps its place in
    the group) and calls ``wait(timeout_s)`` until it returns True, then processes the batch
    again. Unlike :class:`RetryBatch` it never gives up and never dead-letters: nothing in the
    batch is at fault, and an outage of an hour must not turn an hour of input into dead letters.
    """

    def __init__(self, message: str, wait: Callable[[float], bool]) -> None:
        super().__init__(message)
        self.wait = wait


class StageLifecycle(Protocol):
    name: str  # fetch, embed, ...
    input_topic: TopicKey

    def start(self) -> None:
        """Build heavy things (models, HTTP sessions) inside the worker process."""

    def close(self) -> None:
        """Release what start() built."""


class Stage(StageLifecycle, Protocol):
    """A batch transform: the runner hands it a batch and commits the results together."""

    def process(self, batch: Sequence[InputRecord]) -> list[Result]:
        """Transform a batch; exactly one result per input, in input order."""


class PipelinedStage(StageLifecycle, Protocol):
    """A transform whose inputs take very different times (downloads): each input is submitted
    as it arrives and worked on concurrently; the runner hands back the finished ones, in offset
    order, to :meth:`finish` just before it commits them.

    ``submit`` must not block; the future's exception (or :class:`RetryBatch` from ``submit``)
    means a transient fault of the stage itself, so the runner redoes everything uncommitted.
    """

    def submit(self, record: InputRecord) -> Future[Any]:
        """Start work on one input; the future's value is whatever ``finish`` needs."""

    def finish(self, done: Sequence[tuple[InputRecord, Any]]) -> list[Result]:
        """Results for finished inputs (in commit order), one each; the only ordered step."""


class TransactionAware(Protocol):
    """Optional hooks a stage may add: told after each batch whether its transaction committed."""

    def committed(self) -> None: ...

    def aborted(self) -> None: ...


# A dead letter keeps the original event, but at most this much of it: the DLQ topic's message
# limit must hold whatever arrived (an input near the broker's limit included).
MAX_ORIGINAL_BYTES = 1024 * 1024


def dead_letter(record: InputRecord, stage: str, failure: Failure) -> OutputRecord:
    """The DLQ record for ``record``: original bytes and headers, cause, reason, source offset.

    An original value over :data:`MAX_ORIGINAL_BYTES` is kept cut to that size, with its full size
    and SHA-256 in ``details`` (``original_truncated``); such a letter cannot be redriven.
    """
    details = dict(failure.details)
    value = record.value
    if len(value) > MAX_ORIGINAL_BYTES:
        details.update(
            original_truncated="true",
            original_bytes=str(len(value)),
            original_sha256=hashlib.sha256(value).hexdigest(),
        )
        value = value[:MAX_ORIGINAL_BYTES]
    dl = DeadLetter(
        stage=stage,
        error_class=failure.error_class,
        reason=failure.reason,
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        original_key=record.key,
        original_value=value,
        original_headers=record.headers,
        failed_at=time.time(),
        media_id=failure.media_id or (record.key or b"").decode("utf-8", "replace"),
        redrive_count=_redrive_count(record.headers),
        details=details,
    )
    return OutputRecord(topic="dlq", key=record.key or b"", value=encode_dead_letter(dl))


def fault_failure(exc: BaseException, what: str) -> Failure:
    """A record that made the stage itself raise, found by isolating it: its dead letter says how."""
    text = f"{type(exc).__name__}: {exc}"
    text = text if len(text) <= 300 else text[:299] + "\u2026"
    reason = f"{what} raised on this record alone: {text}"
    return Failure("stage_fault", reason, details={"exception": type(exc).__name__})


def _redrive_count(headers: tuple[Header, ...]) -> int:
    for h in headers:
        if h.key == "mediavec-redrive-count" and h.value:
            try:
                return min(max(0, int(h.value)), 1_000_000)
            except ValueError:  # a header someone else set: not ours to trust
                return 0
    return 0

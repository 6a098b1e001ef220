"""Classify Kafka client errors before acting on them (retry, abort and rewind, or exit).

Kept free of I/O so the classification is testable without a broker: confluent-kafka's
``KafkaError`` can be built by hand with the flags the client would set.
"""

from __future__ import annotations

import enum
import random
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException

T = TypeVar("T")


class Action(enum.Enum):
    RETRY = "retry"  # transient: same call again after a backoff
    ABORT = "abort"  # abort the transaction, rewind the consumer, process the batch again
    FATAL = "fatal"  # the producer is fenced or broken: exit and let the supervisor restart us


class FatalKafkaError(RuntimeError):
    """The worker cannot continue (fenced producer, fatal client error)."""


class ClientHung(FatalKafkaError):
    """A client call outlived its own timeout by far: the client is stuck, so is the worker.

    The process must exit without the usual shutdown (which would call into the same client) and
    be started afresh; a new producer with the same transactional id aborts what was left open.
    """


def bounded(call: Callable[[], T], limit_s: float, what: str) -> T:
    """``call()``, or :class:`ClientHung` when it has not returned after ``limit_s``.

    For librdkafka calls whose own timeout is not always kept: ``send_offsets_to_transaction`` waits
    forever on a group coordinator that left the cluster (librdkafka #5456, #5511), which stalled a
    worker for good after a broker was killed. The call runs on a daemon thread, so a hung one
    never holds the interpreter's exit.
    """
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as exc:  # handed over to the caller's thread
            future.set_exception(exc)

    threading.Thread(target=run, name=f"bounded {what}", daemon=True).start()
    try:
        return future.result(timeout=limit_s)
    except TimeoutError:
        raise ClientHung(f"{what} did not return within {limit_s:.0f} s") from None


_FENCED = {
    KafkaError._FENCED,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
}


def is_fatal(err: KafkaError) -> bool:
    """A consumer error after which the client cannot go on (e.g. a fenced static member)."""
    return bool(err.fatal()) or err.code() in (KafkaError._FATAL, KafkaError.FENCED_INSTANCE_ID)


def classify(exc: BaseException) -> Action:
    """What to do about an exception raised by a producer or consumer call."""
    if not isinstance(exc, KafkaException) or not exc.args or not isinstance(exc.args[0], KafkaError):
        return Action.FATAL
    err: KafkaError = exc.args[0]
    if err.fatal() or err.code() in _FENCED:
        return Action.FATAL
    if err.txn_requires_abort():
        return Action.ABORT
    if err.retriable():
        return Action.RETRY
    return Action.ABORT


def backoff_s(attempt: int, base: float = 0.2, cap: float = 10.0, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**(attempt-1))].

    ``attempt`` counts from 1 (the wait before the first retry). Full jitter spreads the retries of
    many callers that failed together, so they do not return as one burst (AWS Architecture Blog,
    "Exponential Backoff And Jitter"). Every retry loop of the project uses it: Kafka commits,
    downloads, a remote provider's requests. ``rng`` makes a test or a simulation reproducible.
    """
    exponent = min(max(0, attempt - 1), 62)  # 2**62 already dwarfs any cap; avoids float overflow
    return (rng or random).uniform(0.0, min(cap, base * 2.0**exponent))

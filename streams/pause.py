"""Stop consuming while a service the stage depends on is down, without leaving the group.

A transactional runner whose stage raises :class:`~streams.stage.StageUnavailable` has already
rewound the batch; :func:`pause_until_available` then pauses every assigned partition and keeps
calling ``poll`` (a paused partition returns nothing, and polling keeps the member inside
``max.poll.interval.ms``) while it asks the stage's ``wait`` whether the service is back, with
a growing pause between questions (1 s, doubling, at most :data:`MAX_PAUSE_S`), however fast the
answer "no" came (a refused API key answers at once), and each question at most
:data:`MAX_ASK_S` long, so a stop (SIGTERM) is noticed within seconds. A partition
assigned during the pause is paused too; a message it had already fetched is sought back, so
nothing is skipped. The runner then resumes and processes the rewound batch again.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streams.metrics import PAUSED, PAUSES
from streams.stage import StageUnavailable

logger = logging.getLogger(__name__)

MAX_PAUSE_S = 60.0
MAX_ASK_S = 5.0  # the longest one question may take, so that a stop is noticed soon


def pause_until_available(consumer: Consumer, stage: str, down: StageUnavailable, stop: threading.Event) -> None:
    """Pause consumption until ``down.wait`` says the service is back (or ``stop`` is set)."""
    logger.warning("%s: pausing consumption until the service is back: %s", stage, down)
    PAUSES.labels(stage).inc()
    PAUSED.labels(stage).set(1)
    started = time.monotonic()
    paused = _pause_assigned(consumer, set())
    wait_s = 1.0
    try:
        while not stop.is_set():
            next_ask = time.monotonic() + wait_s
            if down.wait(min(wait_s, MAX_ASK_S)):
                break
            while not stop.is_set() and time.monotonic() < next_ask:  # a quick "no" still waits its turn
                paused = _keep_polling(consumer, paused)
            wait_s = min(MAX_PAUSE_S, wait_s * 2)
    finally:
        _resume(consumer, paused)
        PAUSED.labels(stage).set(0)
    if not stop.is_set():
        logger.warning("%s: resuming after %.1f s paused", stage, time.monotonic() - started)


def _pause_assigned(consumer: Consumer, paused: set[tuple[str, int]]) -> set[tuple[str, int]]:
    """Pause everything assigned (again: a partition revoked and given back meanwhile was resumed
    by :func:`clear_pauses`); the set of paused partitions, those paused before included."""
    assigned = consumer.assignment()
    if assigned:
        consumer.pause(assigned)
    return paused | {(tp.topic, tp.partition) for tp in assigned}


def _keep_polling(consumer: Consumer, paused: set[tuple[str, int]]) -> set[tuple[str, int]]:
    """One poll for the group's sake; a message of a newly assigned partition is put back."""
    msg = consumer.poll(0.1)
    if msg is not None and msg.error() is None:
        try:
            consumer.seek(TopicPartition(msg.topic() or "", msg.partition() or 0, msg.offset() or 0))
        except KafkaException as exc:  # not assigned any more: its new owner starts from the commit
            logger.debug("seek back during a pause failed: %s", exc)
    return _pause_assigned(consumer, paused)


def clear_pauses(consumer: Consumer, partitions: list[TopicPartition]) -> None:
    """Resume partitions being revoked. librdkafka keeps a partition's pause through a rebalance, so
    one paused here (backpressure, a service down) and assigned back later would never be read again."""
    if not partitions:
        return
    try:
        consumer.resume(partitions)
    except KafkaException as exc:  # already gone (a lost assignment): nothing of ours is left paused on it
        logger.debug("resuming revoked partitions failed: %s", exc)


def _resume(consumer: Consumer, paused: set[tuple[str, int]]) -> None:
    assigned = [tp for tp in consumer.assignment() if (tp.topic, tp.partition) in paused]
    if assigned:
        consumer.resume(assigned)

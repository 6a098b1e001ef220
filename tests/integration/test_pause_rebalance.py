"""A partition paused by a worker and assigned back to it after a rebalance is read again.

librdkafka keeps a partition's pause through an eager rebalance (the group protocol mediavec's
consumers use): a fetch worker that had paused a partition for backpressure, or a stage paused
for a service that is down, and got that partition back when a worker joined the group, never read
it again; the scaling benchmark stalled on it. The runners resume whatever is revoked
(:func:`streams.pause.clear_pauses`, installed by ``TransactionalLoop`` as its revoke callback).
The first case pins librdkafka's behaviour, the second that the callback undoes it, both against
the real broker with the consumers mediavec's workers use.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from mediavec.settings import Settings
from streams.kafka import consumer, producer
from streams.pause import clear_pauses

pytestmark = pytest.mark.integration

PER_PARTITION = 10
Revoke = Callable[[Consumer, list[TopicPartition]], None]


def _keep(_consumer: Consumer, _partitions: list[TopicPartition]) -> None:
    """A revoke callback that leaves pauses as they are (what the runners did before)."""


def _read_after_a_rebalance(settings: Settings, on_revoke: Revoke) -> tuple[set[int], int]:
    """A reads, pauses everything, B joins; A's partitions after the rebalance and what A read from them."""
    topic, group = f"{settings.topics.prefix}pause-rebalance", f"{settings.topics.prefix}pause-group"
    admin = AdminClient(settings.kafka.client_config())
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    p = producer(settings)
    for i in range(2 * PER_PARTITION):
        p.produce(topic, value=b"x", partition=i % 2)
    assert p.flush(30) == 0
    a = consumer(settings, group, instance="a")
    a.subscribe([topic], on_revoke=on_revoke, on_lost=on_revoke)
    deadline = time.monotonic() + 60
    first = None
    while first is None or len(a.assignment()) < 2:
        assert time.monotonic() < deadline, "A never got both partitions"
        first = first or a.poll(0.2)
    a.pause(a.assignment())  # as a worker does under backpressure or with its service down
    b = consumer(settings, group, instance="b")
    b.subscribe([topic])
    read: dict[int, int] = {0: 0, 1: 0}

    def poll_both() -> None:
        for member in (a, b):
            msg = member.poll(0.1)
            if member is a and msg is not None and msg.error() is None:
                read[msg.partition() or 0] += 1

    try:
        deadline = time.monotonic() + 60
        while len(a.assignment()) != 1 or not b.assignment():  # the rebalance: one partition each
            assert time.monotonic() < deadline, "the group never split the partitions"
            poll_both()
        mine = {tp.partition for tp in a.assignment()}
        settle = time.monotonic() + 8  # long enough for A to read its partition, were it not paused
        while time.monotonic() < settle and sum(read[p] for p in mine) < PER_PARTITION - 1:
            poll_both()
        return mine, sum(read[p] for p in mine)
    finally:
        a.close()
        b.close()


def test_librdkafka_keeps_a_pause_through_a_rebalance(settings: Settings) -> None:
    _mine, read = _read_after_a_rebalance(settings, _keep)
    assert read == 0  # if this fails, librdkafka changed and clear_pauses may be unneeded


def test_a_partition_paused_before_a_rebalance_is_read_once_assigned_back(settings: Settings) -> None:
    _mine, read = _read_after_a_rebalance(settings, clear_pauses)
    assert read >= PER_PARTITION - 1  # all of it (less the one A read before pausing, if it was this one)

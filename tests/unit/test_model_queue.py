"""ModelQueue: bounded, batched by size, deadline or flush; a poison item fails alone."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from consumers.embed.queues import ModelQueue


class Recorder:
    """A model function that records the batches it was called with (and can refuse items)."""

    def __init__(self, poison: set[int] | None = None, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.poison = poison or set()
        self.gate = gate

    def __call__(self, items: list[int]) -> Sequence[int]:
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append(list(items))
        if self.poison & set(items):
            raise ValueError(f"cannot take {sorted(self.poison & set(items))}")
        return [i * 10 for i in items]


def test_items_pool_into_full_batches_and_come_back_in_order() -> None:
    gate = threading.Event()
    model = Recorder(gate=gate)
    q: ModelQueue[int, int] = ModelQueue("t", model, batch_size=4, deadline_s=5.0, depth_batches=4)
    futures = q.map(range(10))
    gate.set()
    q.flush()
    assert [f.result(10) for f in futures] == [i * 10 for i in range(10)]
    assert [len(b) for b in model.batches] == [4, 4, 2]
    assert (q.batches_run, q.items_run) == (3, 10)
    q.close()


def test_a_partial_batch_runs_at_its_deadline_without_a_flush() -> None:
    model = Recorder()
    q: ModelQueue[int, int] = ModelQueue("t", model, batch_size=64, deadline_s=0.05)
    assert q.submit(3).result(10) == 30
    assert model.batches == [[3]]
    q.close()


def test_flush_runs_a_partial_batch_at_once() -> None:
    model = Recorder()
    q: ModelQueue[int, int] = ModelQueue("t", model, batch_size=64, deadline_s=3600.0)
    futures = q.map([1, 2, 3])
    q.flush()
    assert [f.result(10) for f in futures] == [10, 20, 30]  # would wait an hour without the flush
    assert model.batches == [[1, 2, 3]]
    q.close()


def test_a_poison_item_fails_alone_and_its_neighbours_succeed() -> None:
    model = Recorder(poison={5})
    q: ModelQueue[int, int] = ModelQueue("t", model, batch_size=8, deadline_s=3600.0)
    futures = q.map([4, 5, 6])
    q.flush()
    assert futures[0].result(10) == 40 and futures[2].result(10) == 60
    with pytest.raises(ValueError, match=r"cannot take \[5\]"):
        futures[1].result(10)
    assert model.batches == [[4, 5, 6], [4], [5], [6]]
    q.close()


def test_the_queue_is_bounded_so_a_fast_producer_waits() -> None:
    gate = threading.Event()
    model = Recorder(gate=gate)
    q: ModelQueue[int, int] = ModelQueue("t", model, batch_size=2, deadline_s=0.0, depth_batches=1)
    submitted: list[int] = []

    def produce() -> None:
        for i in range(10):
            q.submit(i)
            submitted.append(i)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    producer.join(0.5)
    # The worker holds one batch (2) blocked in the model, the queue holds 2 more: the rest wait.
    assert producer.is_alive() and len(submitted) <= 5
    gate.set()
    producer.join(10)
    assert submitted == list(range(10))
    q.close()


def test_a_closed_queue_refuses_work_and_a_wrong_output_count_is_an_error() -> None:
    q: ModelQueue[int, int] = ModelQueue("t", lambda items: [0, 0, 0], batch_size=4, deadline_s=3600.0)
    futures = q.map([1, 2])
    q.flush()
    with pytest.raises(RuntimeError, match="outputs"):
        futures[0].result(10)
    q.close()
    with pytest.raises(RuntimeError, match="closed"):
        q.submit(1)
    with pytest.raises(ValueError, match="at least 1"):
        ModelQueue("t", lambda items: items, batch_size=0, deadline_s=1.0)


class Down(Exception):
    """The model's service is unreachable: every item would fail alike."""


def test_an_exception_answered_in_an_items_place_fails_that_item_alone() -> None:
    calls: list[list[int]] = []

    def model(items: list[int]) -> Sequence[int | Exception]:
        calls.append(list(items))
        return [ValueError(f"refused {i}") if i == 5 else i * 10 for i in items]

    q: ModelQueue[int, int] = ModelQueue("t", model, batch_size=8, deadline_s=3600.0)
    futures = q.map([4, 5, 6])
    q.flush()
    assert futures[0].result(10) == 40 and futures[2].result(10) == 60
    with pytest.raises(ValueError, match="refused 5"):
        futures[1].result(10)
    assert calls == [[4, 5, 6]]  # one call: no item-by-item retry for an answered refusal
    q.close()


def test_a_fatal_fault_fails_the_whole_batch_without_retrying_each_item() -> None:
    calls: list[list[int]] = []

    def model(items: list[int]) -> Sequence[int]:
        calls.append(list(items))
        raise Down("provider unreachable")

    q: ModelQueue[int, int] = ModelQueue("t", model, batch_size=8, deadline_s=3600.0, fatal=(Down,))
    futures = q.map([1, 2, 3])
    q.flush()
    for f in futures:
        with pytest.raises(Down):
            f.result(10)
    assert calls == [[1, 2, 3]]
    q.close()

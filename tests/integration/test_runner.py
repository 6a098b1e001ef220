"""The transactional runner against the real broker, with a small pure stage."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence

import pytest

from mediavec.settings import Settings
from schemas import decode_dead_letter
from streams.admin import ensure_topics
from streams.kafka import producer
from streams.runner import TransactionalRunner
from streams.stage import Failure, InputRecord, OutputRecord, Result, RetryBatch, TopicKey
from streams.topics import topics
from tests.kafkautil import ThreadWorker, read_topic, wait_for

pytestmark = pytest.mark.integration


class FanOut:
    """requests -> frames: n copies of each event; 'bad' events fail; optional one-off retry."""

    name = "fanout"
    input_topic: TopicKey = "requests"

    def __init__(self, copies: int = 3, retry_first: bool = False) -> None:
        self.copies = copies
        self.retry_first = retry_first
        self.calls = 0
        self.lock = threading.Lock()

    def start(self) -> None: ...

    def close(self) -> None: ...

    def process(self, batch: Sequence[InputRecord]) -> list[Result]:
        with self.lock:
            self.calls += 1
            if self.retry_first and self.calls == 1:
                raise RetryBatch("transient, on purpose")
        out: list[Result] = []
        for r in batch:
            doc = json.loads(r.value)
            if doc.get("bad"):
                out.append(Failure("bad_input", f"event {doc['i']} is bad", media_id=str(doc["i"])))
            else:
                out.append(
                    [OutputRecord("frames", r.key or b"", f"{doc['i']}:{k}".encode()) for k in range(self.copies)]
                )
        return out


def _publish(settings: Settings, n: int, bad_every: int = 0) -> None:
    p = producer(settings)
    name = topics(settings).requests.name
    for i in range(n):
        bad = bool(bad_every) and i % bad_every == 0
        p.produce(
            name, key=f"m{i % 7}".encode(), value=json.dumps({"i": i, "bad": bad}).encode(), headers=[("h", b"v")]
        )
    assert p.flush(30) == 0


def _outputs(settings: Settings) -> list[bytes]:
    return [m.value for m in read_topic(settings, topics(settings).frames.name)]


def test_fan_out_lands_exactly_once_and_bad_events_reach_the_dlq(settings: Settings) -> None:
    ensure_topics(settings)
    _publish(settings, 60, bad_every=10)
    runner = TransactionalRunner(settings, FanOut(), batch_size=16, batch_deadline_s=0.2, instance="t1")
    with ThreadWorker(runner):
        wait_for(lambda: len(_outputs(settings)) >= 54 * 3, 60, "all outputs")
    outs = _outputs(settings)
    assert sorted(outs) == sorted(f"{i}:{k}".encode() for i in range(60) if i % 10 for k in range(3))
    letters = [decode_dead_letter(m.value) for m in read_topic(settings, topics(settings).dlq.name)]
    assert sorted(int(d.media_id) for d in letters) == [0, 10, 20, 30, 40, 50]
    for d in letters:
        assert d.stage == "fanout" and d.error_class == "bad_input" and "is bad" in d.reason
        assert d.source_topic == topics(settings).requests.name and d.source_offset >= 0
        assert json.loads(d.original_value)["bad"] is True
        assert [(h.key, h.value) for h in d.original_headers] == [("h", b"v")]


def test_restart_resumes_after_committed_offsets(settings: Settings) -> None:
    ensure_topics(settings)
    _publish(settings, 30)
    with ThreadWorker(TransactionalRunner(settings, FanOut(1), batch_size=8, batch_deadline_s=0.1, instance="t2")):
        wait_for(lambda: len(_outputs(settings)) >= 30, 60, "first 30")
    _publish(settings, 30)  # the same i values again, as new events
    with ThreadWorker(TransactionalRunner(settings, FanOut(1), batch_size=8, batch_deadline_s=0.1, instance="t2")):
        wait_for(lambda: len(_outputs(settings)) >= 60, 60, "next 30")
    outs = _outputs(settings)
    assert len(outs) == 60 and sorted(outs) == sorted(f"{i}:0".encode() for i in range(30) for _ in range(2))


def test_retry_batch_processes_once(settings: Settings) -> None:
    ensure_topics(settings)
    _publish(settings, 20)
    stage = FanOut(2, retry_first=True)
    with ThreadWorker(TransactionalRunner(settings, stage, batch_size=50, batch_deadline_s=0.5, instance="t3")):
        wait_for(lambda: len(_outputs(settings)) >= 40, 60, "outputs after a retry")
    assert stage.calls >= 2
    assert sorted(_outputs(settings)) == sorted(f"{i}:{k}".encode() for i in range(20) for k in range(2))


def test_rebalance_mid_run_loses_and_duplicates_nothing(settings: Settings) -> None:
    ensure_topics(settings)
    _publish(settings, 200)
    a = ThreadWorker(TransactionalRunner(settings, FanOut(1), batch_size=4, batch_deadline_s=0.05, instance="ra"))
    b = ThreadWorker(TransactionalRunner(settings, FanOut(1), batch_size=4, batch_deadline_s=0.05, instance="rb"))
    with a:
        wait_for(lambda: len(_outputs(settings)) >= 20, 60, "first outputs")
        with b:  # joins mid-run, then leaves mid-run
            _publish(settings, 200)
            wait_for(lambda: len(_outputs(settings)) >= 150, 60, "outputs while two members run")
        wait_for(lambda: len(_outputs(settings)) >= 400, 90, "all outputs")
    outs = _outputs(settings)
    assert len(outs) == 400
    assert sorted(outs) == sorted(f"{i}:0".encode() for i in range(200) for _ in range(2))


def test_a_second_worker_with_the_same_instance_is_refused(settings: Settings) -> None:
    ensure_topics(settings)
    first = TransactionalRunner(settings, FanOut(), batch_size=4, batch_deadline_s=0.1, instance="dup")
    with ThreadWorker(first):
        wait_for(lambda: first._consumer is not None, 30, "the first worker to hold its lock and consume")
        second = ThreadWorker(
            TransactionalRunner(settings, FanOut(), batch_size=4, batch_deadline_s=0.1, instance="dup")
        )
        second.__enter__()
        second.thread.join(30)
        assert isinstance(second.error, RuntimeError) and "already runs" in str(second.error)

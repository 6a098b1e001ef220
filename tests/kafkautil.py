"""Small helpers the integration tests share: read a whole topic, run a worker in a thread."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from mediavec.settings import Settings
from streams.kafka import consumer, read_to_end


@dataclass(frozen=True)
class Msg:
    partition: int
    offset: int
    key: bytes | None
    value: bytes


def read_topic(settings: Settings, topic: str, *, committed_only: bool = True, timeout_s: float = 10.0) -> list[Msg]:
    """Every message now readable in ``topic`` (read_committed by default), in partition order."""
    reader = read_to_end(
        settings, topic, "test-reader", timeout_s=timeout_s, committed_only=committed_only, strict=True
    )
    out = [Msg(m.partition() or 0, m.offset() or 0, m.key(), m.value() or b"") for m in reader]
    return sorted(out, key=lambda x: (x.partition, x.offset))


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class ThreadWorker:
    """Runs a runner's ``run(stop)`` in a thread; ``stop()`` ends it and re-raises its error."""

    def __init__(self, runner: object) -> None:
        self.runner = runner
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            self.runner.run(self.stop_event)  # type: ignore[attr-defined]
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> ThreadWorker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(60)
        if self.error is not None:
            raise self.error


def group_caught_up(settings: Settings, group: str, topic: str, *, transactional: bool = False) -> bool:
    """True when ``group`` has committed the end of every partition of ``topic``.

    ``transactional``: the topic is written in transactions, so each partition ends with a commit
    marker that a transactional consumer's committed offset (last record + 1) stops just before.
    """
    marker = 1 if transactional else 0
    c: Consumer = consumer(settings, group)
    try:
        parts = [TopicPartition(topic, p) for p in c.list_topics(topic, timeout=10).topics[topic].partitions]
        ends = {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
        committed = c.committed(parts, timeout=10)
        return all(tp.offset >= ends[tp.partition] - marker or ends[tp.partition] == 0 for tp in committed)
    except Exception:  # a coordinator moving counts as not yet
        return False
    finally:
        c.close()


def wait_sinks_caught_up(settings: Settings, sinks: tuple[str, ...] | list[str], timeout_s: float = 300) -> None:
    from streams.kafka import group_id
    from streams.topics import topics

    vectors = topics(settings).vectors.name
    for sink in sinks:
        group = group_id(settings, sink)
        wait_for(functools.partial(group_caught_up, settings, group, vectors), timeout_s, f"{sink} to catch up")

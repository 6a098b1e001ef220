"""sink-postgres through the real broker: the StoreSinkRunner lands every row once and resumes."""

from __future__ import annotations

import time

import pytest

from consumers.sink_postgres.sink import PostgresSink
from mediavec.settings import Settings
from schemas import encode_vector_batch
from streams.admin import ensure_topics
from streams.kafka import producer
from streams.sink_runner import StoreSinkRunner
from streams.stage import InputRecord
from streams.topics import topics
from tests.kafkautil import ThreadWorker, read_topic, wait_for
from tests.pgutil import row_count, sql, vector_batch, write_batch

pytestmark = pytest.mark.integration


def _produce(settings: Settings, first: int, n: int) -> None:
    p = producer(settings)
    name = topics(settings).vectors.name
    for i in range(first, first + n):
        p.produce(name, key=f"m{i}".encode(), value=encode_vector_batch(vector_batch(f"m{i}", objects=i % 4)))
    assert p.flush(30) == 0


def _rows_expected(first: int, n: int) -> int:
    return sum(1 + i % 4 for i in range(first, first + n))


def _runner(settings: Settings) -> tuple[StoreSinkRunner, PostgresSink]:
    sink = PostgresSink(settings)
    return StoreSinkRunner(settings, sink, batch_size=16, batch_deadline_s=0.2), sink


def _write_directly(settings: Settings) -> None:
    """Apply everything now in the vectors topic through a bare sink: no consumer group commits."""
    name = topics(settings).vectors.name
    now_ms = int(time.time() * 1000)
    records = [
        InputRecord(name, m.partition, m.offset, m.key, m.value, timestamp_ms=now_ms)
        for m in read_topic(settings, name)
    ]
    sink = PostgresSink(settings)
    sink.start()
    try:
        write_batch(sink, records)
    finally:
        sink.close()


def _run_until(settings: Settings, rows: int) -> PostgresSink:
    runner, sink = _runner(settings)
    with ThreadWorker(runner):
        wait_for(lambda: row_count(settings) == rows, 90, f"{rows} rows")
    return sink


def test_runner_lands_every_row_once_and_resumes_from_the_stored_offsets(settings: Settings) -> None:
    ensure_topics(settings)
    _produce(settings, 0, 30)
    _write_directly(settings)  # the database holds offsets; the group has committed none
    _produce(settings, 30, 20)
    first = _run_until(settings, _rows_expected(0, 50))
    # Reading from the group's start (earliest) would have re-read, and re-timestamped, the 30.
    assert (first.stats.records_written, first.stats.records_skipped) == (20, 0)
    _produce(settings, 50, 10)
    second = _run_until(settings, _rows_expected(0, 60))  # a restart
    assert (second.stats.records_written, second.stats.records_skipped) == (10, 0)
    dupes = sql(settings, "SELECT count(*) - count(DISTINCT point_id) FROM frame_metadata")
    assert dupes == [(0,)]
    assert sql(settings, "SELECT sum(next_offset) FROM sink_offsets") == [(60,)]

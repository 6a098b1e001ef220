"""Vector-batch records and queries shared by the sink-postgres tests (each test has its own database)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np

from consumers.sink_postgres.sink import PostgresSink
from mediavec.settings import Settings
from schemas import VectorBatch, VectorRow, encode_vector_batch, point_id
from stores.metadb import connect
from streams.offsets import next_offsets
from streams.stage import InputRecord

MODEL = "open_clip/test/random"
TOPIC = "t.vectors"
T0_MS = int(datetime(2024, 3, 1, 12, tzinfo=UTC).timestamp() * 1000)
DAY_MS = 86_400_000
T = TypeVar("T")


def vector_batch(media: str, objects: int = 0, dim: int = 8) -> VectorBatch:
    rows = [VectorRow(point_id(MODEL, media, 0, "scene"), "scene", media, 0, 0.0)]
    for i in range(1, objects + 1):
        box = (float(i), 2.0, 10.0 * i, 20.0) if i % 2 else None
        label = f"thing{i}" if i % 2 else None
        rows.append(VectorRow(point_id(MODEL, media, 0, "object", i), "object", media, 0, 0.0, i, box, label, 0.5))
    vectors = np.ones((len(rows), dim), dtype=np.float16)
    return VectorBatch(MODEL, vectors, tuple(rows), f"http://127.0.0.1/{media}.jpg", "c1", metadata={"k": media})


def vector_record(offset: int, media: str, objects: int = 0, ts_ms: int = T0_MS, partition: int = 0) -> InputRecord:
    value = encode_vector_batch(vector_batch(media, objects))
    return InputRecord(TOPIC, partition, offset, media.encode(), value, timestamp_ms=ts_ms)


def vector_records(offsets: range, objects: int = 2, ts_ms: int = T0_MS) -> list[InputRecord]:
    return [vector_record(o, f"m{o}", objects, ts_ms) for o in offsets]


def write_batch(sink: PostgresSink, records: list[InputRecord]) -> None:
    good, bad = sink.split(records)
    assert not bad
    sink.write(good, next_offsets(records))


def sql(settings: Settings, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with connect(settings) as conn:
        return conn.execute(query.encode(), params).fetchall()


def row_count(settings: Settings) -> int:
    with connect(settings) as conn:
        row = conn.execute("SELECT count(*) FROM frame_metadata").fetchone()
    return int(row[0]) if row else 0


def table_snapshot(settings: Settings) -> list[tuple[object, ...]]:
    """Every row with its xmin: a rewrite of a row, even with equal values, changes its xmin."""
    return sql(settings, "SELECT xmin::text, * FROM frame_metadata ORDER BY point_id, ingested_at")


def offsets_snapshot(settings: Settings) -> list[tuple[object, ...]]:
    return sql(settings, "SELECT xmin::text, * FROM sink_offsets ORDER BY topic, partition")


def race(settings: Settings, n: int, body: Callable[[Any], T]) -> list[T]:
    """Run body(conn) on n connections released together by a barrier; return the results, raise the first error."""
    barrier = threading.Barrier(n)
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with connect(settings) as conn:
                barrier.wait()
                results.append(body(conn))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results

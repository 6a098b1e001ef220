"""sink-postgres against the real PostgreSQL: exactly-once writes, daily partitions and crashes.

Each test gets its own database (the ``settings`` fixture) and calls the sink directly with
records shaped as the runner delivers them.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from consumers.sink_postgres.sink import PostgresSink
from mediavec.settings import Settings
from schemas import encode_vector_batch, point_id
from stores.metadb import connect, drop_old_partitions, ensure_partitions
from stores.metadb.partitions import existing_partitions
from streams.stage import InputRecord
from tests.kafkautil import wait_for
from tests.pgutil import (
    DAY_MS,
    MODEL,
    T0_MS,
    TOPIC,
    offsets_snapshot,
    race,
    row_count,
    sql,
    table_snapshot,
    vector_batch,
    vector_record,
    vector_records,
    write_batch,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def sink(settings: Settings) -> Iterator[PostgresSink]:
    s = PostgresSink(settings)
    s.start()
    yield s
    s.close()


# -- exactly-once writes -------------------------------------------------------------------------


def test_write_stores_rows_and_offsets_and_a_redelivery_changes_nothing(settings: Settings, sink: PostgresSink) -> None:
    records = vector_records(range(5), objects=2)
    write_batch(sink, records)
    assert row_count(settings) == 15
    assert sink.load_offsets() == {(TOPIC, 0): 5}
    rows, offsets = table_snapshot(settings), offsets_snapshot(settings)

    write_batch(sink, records)  # the same records at the same offsets, as after a crash before the ack
    assert table_snapshot(settings) == rows  # same values and same xmin: nothing was rewritten
    assert offsets_snapshot(settings) == offsets
    assert (sink.stats.records_written, sink.stats.records_skipped, sink.stats.rows_inserted) == (5, 5, 15)

    obj = sql(
        settings,
        "SELECT box_x1, box_y1, box_x2, box_y2, label, score, metadata->>'k', source_offset, ingested_at "
        "FROM frame_metadata WHERE point_id = %s",
        (point_id(MODEL, "m3", 0, "object", 1),),
    )
    assert obj == [(1.0, 2.0, 10.0, 20.0, "thing1", 0.5, "m3", 3, datetime(2024, 3, 1, 12, tzinfo=UTC))]
    nulls = sql(
        settings,
        "SELECT box_x1, label FROM frame_metadata WHERE point_id = %s",
        (point_id(MODEL, "m3", 0, "object", 2),),
    )
    assert nulls == [(None, None)]


def test_records_below_the_stored_offsets_are_skipped_not_deduplicated(settings: Settings, sink: PostgresSink) -> None:
    write_batch(sink, vector_records(range(5), objects=0))
    # Offsets 3 and 4 again, but carrying other media: only offset skipping keeps them out.
    impostors = [vector_record(3, "other3"), vector_record(4, "other4")]
    write_batch(sink, [*impostors, *vector_records(range(5, 8), objects=0)])
    media = [m for (m,) in sql(settings, "SELECT media_id FROM frame_metadata ORDER BY source_offset")]
    assert media == [f"m{i}" for i in range(8)]
    assert sink.load_offsets() == {(TOPIC, 0): 8}
    assert sink.stats.records_skipped == 2


def test_offsets_never_move_back(settings: Settings, sink: PostgresSink) -> None:
    write_batch(sink, vector_records(range(10), objects=0))
    sink.write([], {(TOPIC, 0): 4})  # a stale writer's offsets
    assert sink.load_offsets() == {(TOPIC, 0): 10}


def test_daily_partitions_follow_the_record_timestamps(settings: Settings, sink: PostgresSink) -> None:
    recs = [
        vector_record(0, "a", ts_ms=T0_MS),
        vector_record(1, "b", ts_ms=T0_MS + DAY_MS),
        vector_record(2, "c", ts_ms=T0_MS + 9 * DAY_MS),
    ]
    write_batch(sink, recs)
    placed = sql(settings, "SELECT media_id, tableoid::regclass::text FROM frame_metadata ORDER BY media_id")
    assert placed == [
        ("a", "frame_metadata_p20240301"),
        ("b", "frame_metadata_p20240302"),
        ("c", "frame_metadata_p20240310"),
    ]
    with connect(settings) as conn:
        assert sorted(existing_partitions(conn)) == [date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 10)]


def test_dropping_old_partitions_removes_only_old_days(settings: Settings, sink: PostgresSink) -> None:
    today = date(2024, 3, 20)
    days_ago = [10, 8, 7, 0]
    stamps = [
        int(datetime.combine(today - timedelta(d), datetime.min.time(), UTC).timestamp() * 1000) for d in days_ago
    ]
    write_batch(sink, [vector_record(i, f"m{i}", ts_ms=ts + 1000) for i, ts in enumerate(stamps)])
    dropped = drop_old_partitions(settings, 7, today=today)
    with connect(settings) as conn:
        left = sorted(existing_partitions(conn))
    assert dropped == [
        "frame_metadata_p20240310",
        "frame_thumbnails_p20240310",
        "frame_metadata_p20240312",
        "frame_thumbnails_p20240312",
    ]
    assert left == [date(2024, 3, 13), date(2024, 3, 20)]
    assert sorted(str(m) for (m,) in sql(settings, "SELECT media_id FROM frame_metadata")) == ["m2", "m3"]


def test_workers_creating_the_same_partitions_at_once_do_not_collide(settings: Settings, sink: PostgresSink) -> None:
    days = [date(2024, 1, d) for d in range(1, 6)]
    race(settings, 5, lambda conn: ensure_partitions(conn, days))
    with connect(settings) as conn:
        assert sorted(existing_partitions(conn)) == days


# -- crashes -----------------------------------------------------------------------------------


def test_a_connection_killed_mid_transaction_leaves_neither_rows_nor_offsets(
    settings: Settings, sink: PostgresSink
) -> None:
    records = vector_records(range(4), objects=3)
    last = point_id(MODEL, "m3", 0, "object", 3)
    with connect(settings) as blocker:
        ensure_partitions(blocker, [date(2024, 3, 1)])
        blocker.execute("BEGIN")
        # An uncommitted row with the key of the batch's last row: the sink's INSERT waits on it.
        blocker.execute(
            "INSERT INTO frame_metadata (point_id, ingested_at, media_id, frame_index, timestamp_s, space, "
            "object_index, model, collection, source_url, content_sha256, run_id, source_topic, source_partition, "
            "source_offset) VALUES (%s, %s, 'x', 0, 0, 'scene', 0, 'm', 'c', 'u', '', '', 't', 0, 0)",
            (last, datetime(2024, 3, 1, 12, tzinfo=UTC)),
        )
        pid = sink.conn.info.backend_pid
        failure: list[BaseException] = []
        writer = threading.Thread(target=lambda: _capture(failure, lambda: write_batch(sink, records)))
        writer.start()
        wait_for(lambda: _waiting_on_lock(settings, pid), 30, "the sink's insert to wait on the blocker")
        sql(settings, "SELECT pg_terminate_backend(%s)", (pid,))
        writer.join(30)
        blocker.execute("ROLLBACK")
    assert failure and isinstance(failure[0], psycopg.OperationalError)
    assert row_count(settings) == 0
    assert sql(settings, "SELECT count(*) FROM sink_offsets WHERE next_offset > 0") == [(0,)]
    restarted = PostgresSink(settings)
    restarted.start()
    try:
        assert restarted.load_offsets() == {}  # even the new offset row was rolled back
        write_batch(restarted, records)
        assert row_count(settings) == 16 and restarted.load_offsets() == {(TOPIC, 0): 4}
    finally:
        restarted.close()


def _capture(into: list[BaseException], fn: object) -> None:
    try:
        fn()  # type: ignore[operator]
    except BaseException as exc:
        into.append(exc)


def _waiting_on_lock(settings: Settings, pid: int) -> bool:
    rows = sql(settings, "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
    return rows == [("Lock",)]


def test_a_row_the_database_refuses_rolls_back_the_whole_batch(settings: Settings, sink: PostgresSink) -> None:
    write_batch(sink, vector_records(range(2), objects=0))
    before = table_snapshot(settings)
    # split() would send this batch to the DLQ; write() is handed it anyway, after good ones.
    bad = vector_batch("bad", objects=1)
    bad = dataclasses.replace(bad, rows=(bad.rows[0], dataclasses.replace(bad.rows[1], label="x\x00y")))
    records = [
        *vector_records(range(2, 4), objects=0),
        InputRecord(TOPIC, 0, 4, b"bad", encode_vector_batch(bad), timestamp_ms=T0_MS),
    ]
    with pytest.raises(psycopg.DataError):
        sink.write(records, {(TOPIC, 0): 5})
    assert table_snapshot(settings) == before
    assert sink.load_offsets() == {(TOPIC, 0): 2}
    write_batch(sink, vector_records(range(2, 4), objects=0))  # the connection is usable again
    assert row_count(settings) == 4

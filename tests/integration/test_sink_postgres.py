"""sink-postgres against the real PostgreSQL (and, last, the real broker): exactly-once writes.

Each test gets its own database (the ``settings`` fixture). Most tests call the sink directly
with records shaped as the runner delivers them; the last one runs the real StoreSinkRunner.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest
from pydantic import SecretStr

from consumers.sink_postgres.sink import PostgresSink
from consumers.sink_postgres.transform import COLUMNS
from mediavec.devstack import postgres as devstack_postgres
from mediavec.metadb import applied_versions, connect, drop_old_partitions, dsn, ensure_partitions, migrate
from mediavec.metadb.migrate import MigrationError, directory_migrations
from mediavec.metadb.partitions import existing_partitions
from schemas import VectorBatch, VectorRow, encode_vector_batch, point_id
from streams.admin import ensure_topics
from streams.kafka import producer
from streams.settings import PostgresSettings, Settings
from streams.sink_runner import StoreSinkRunner
from streams.stage import InputRecord
from streams.topics import topics
from tests.kafkautil import ThreadWorker, read_topic, wait_for

pytestmark = pytest.mark.integration

MODEL = "open_clip/test/random"
TOPIC = "t.vectors"
T0_MS = int(datetime(2024, 3, 1, 12, tzinfo=UTC).timestamp() * 1000)
DAY_MS = 86_400_000


def _batch(media: str, objects: int = 0, dim: int = 8) -> VectorBatch:
    rows = [VectorRow(point_id(MODEL, media, 0, "scene"), "scene", media, 0, 0.0)]
    for i in range(1, objects + 1):
        box = (float(i), 2.0, 10.0 * i, 20.0) if i % 2 else None
        label = f"thing{i}" if i % 2 else None
        rows.append(VectorRow(point_id(MODEL, media, 0, "object", i), "object", media, 0, 0.0, i, box, label, 0.5))
    vectors = np.ones((len(rows), dim), dtype=np.float16)
    return VectorBatch(MODEL, vectors, tuple(rows), f"http://127.0.0.1/{media}.jpg", "c1", metadata={"k": media})


def _record(offset: int, media: str, objects: int = 0, ts_ms: int = T0_MS, partition: int = 0) -> InputRecord:
    value = encode_vector_batch(_batch(media, objects))
    return InputRecord(TOPIC, partition, offset, media.encode(), value, timestamp_ms=ts_ms)


def _records(offsets: range, objects: int = 2, ts_ms: int = T0_MS) -> list[InputRecord]:
    return [_record(o, f"m{o}", objects, ts_ms) for o in offsets]


def _write(sink: PostgresSink, records: list[InputRecord]) -> None:
    good, bad = sink.split(records)
    assert not bad
    nxt: dict[tuple[str, int], int] = {}
    for r in records:
        nxt[(r.topic, r.partition)] = max(nxt.get((r.topic, r.partition), 0), r.offset + 1)
    sink.write(good, nxt)


def _query(settings: Settings, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with connect(settings) as conn:
        return conn.execute(query.encode(), params).fetchall()


def _count(settings: Settings) -> int:
    with connect(settings) as conn:
        row = conn.execute("SELECT count(*) FROM frame_metadata").fetchone()
    return int(row[0]) if row else 0


def _snapshot(settings: Settings) -> list[tuple[object, ...]]:
    """Every row with its xmin: a rewrite of a row, even with equal values, changes its xmin."""
    return _query(settings, "SELECT xmin::text, * FROM frame_metadata ORDER BY point_id, ingested_at")


def _offsets_snapshot(settings: Settings) -> list[tuple[object, ...]]:
    return _query(settings, "SELECT xmin::text, * FROM sink_offsets ORDER BY topic, partition")


@pytest.fixture
def sink(settings: Settings) -> Iterator[PostgresSink]:
    s = PostgresSink(settings)
    s.start()
    yield s
    s.close()


# -- migrations --------------------------------------------------------------------------------


def test_migrations_build_the_schema_once(settings: Settings) -> None:
    with connect(settings) as conn:
        assert migrate(conn) == [1]
        assert migrate(conn) == []
        assert applied_versions(conn) == [1]
        cols = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'frame_metadata' "
            "ORDER BY ordinal_position"
        ).fetchall()
        strategy = conn.execute(
            "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'frame_metadata'::regclass"
        ).fetchone()
    assert tuple(c for (c,) in cols) == COLUMNS
    assert strategy == ("r",)


def _write_files(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_concurrent_migrations_apply_each_file_once_in_numeric_order(settings: Settings, tmp_path: Path) -> None:
    # Neither file is idempotent: without the lock a second runner would fail or insert twice.
    folder = _write_files(
        tmp_path / "m",
        {
            "2_create.sql": "CREATE TABLE runs (n int);",
            "10_fill.sql": "INSERT INTO runs VALUES (1);",
            "README.txt": "not a migration",
        },
    )
    migrations = directory_migrations(folder)
    barrier = threading.Barrier(6)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with connect(settings) as conn:
                barrier.wait()
                results.append(migrate(conn, migrations))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(v for r in results for v in r) == [2, 10]
    assert _query(settings, "SELECT count(*) FROM runs") == [(1,)]
    assert _query(settings, "SELECT version FROM schema_migrations ORDER BY applied_at, version") == [(2,), (10,)]


def test_failing_migration_rolls_back_alone_and_applied_files_must_not_change(
    settings: Settings, tmp_path: Path
) -> None:
    files = {"1_ok.sql": "CREATE TABLE a (x int);", "2_bad.sql": "CREATE TABLE b (x int); SELECT nope;"}
    folder = _write_files(tmp_path / "m", files)
    with connect(settings) as conn:
        with pytest.raises(psycopg.errors.UndefinedColumn):
            migrate(conn, directory_migrations(folder))
        assert applied_versions(conn) == [1]
        assert conn.execute("SELECT to_regclass('b')").fetchone() == (None,)
        (folder / "1_ok.sql").write_text("CREATE TABLE a (x bigint);")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            migrate(conn, directory_migrations(folder))


# -- connection ---------------------------------------------------------------------------------


def test_the_dsn_comes_from_settings_or_the_dev_stack_and_is_never_logged(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    unset = Settings(devstack=settings.devstack, postgres=PostgresSettings())
    assert dsn(unset) == devstack_postgres.dsn(settings)
    assert settings.postgres.dsn is not None
    # The stack trusts local connections, so the password is ignored by the server but is in the DSN.
    secret = settings.postgres.dsn.get_secret_value() + " password=s3cr3t-do-not-log"
    secretive = settings.model_copy(update={"postgres": PostgresSettings(dsn=SecretStr(secret))})
    caplog.set_level(logging.DEBUG)
    sink = PostgresSink(secretive)
    sink.start()
    try:
        _write(sink, _records(range(3)))
    finally:
        sink.close()
    assert _count(settings) == 9
    assert caplog.records and "s3cr3t" not in caplog.text
    assert "s3cr3t" not in repr(secretive)


# -- exactly-once writes -------------------------------------------------------------------------


def test_write_stores_rows_and_offsets_and_a_redelivery_changes_nothing(settings: Settings, sink: PostgresSink) -> None:
    records = _records(range(5), objects=2)
    _write(sink, records)
    assert _count(settings) == 15
    assert sink.load_offsets() == {(TOPIC, 0): 5}
    rows, offsets = _snapshot(settings), _offsets_snapshot(settings)

    _write(sink, records)  # the same records at the same offsets, as after a crash before the ack
    assert _snapshot(settings) == rows  # same values and same xmin: nothing was rewritten
    assert _offsets_snapshot(settings) == offsets
    assert (sink.stats.records_written, sink.stats.records_skipped, sink.stats.rows_inserted) == (5, 5, 15)

    obj = _query(
        settings,
        "SELECT box_x1, box_y1, box_x2, box_y2, label, score, metadata->>'k', source_offset, ingested_at "
        "FROM frame_metadata WHERE point_id = %s",
        (point_id(MODEL, "m3", 0, "object", 1),),
    )
    assert obj == [(1.0, 2.0, 10.0, 20.0, "thing1", 0.5, "m3", 3, datetime(2024, 3, 1, 12, tzinfo=UTC))]
    nulls = _query(
        settings,
        "SELECT box_x1, label FROM frame_metadata WHERE point_id = %s",
        (point_id(MODEL, "m3", 0, "object", 2),),
    )
    assert nulls == [(None, None)]


def test_records_below_the_stored_offsets_are_skipped_not_deduplicated(settings: Settings, sink: PostgresSink) -> None:
    _write(sink, _records(range(5), objects=0))
    # Offsets 3 and 4 again, but carrying other media: only offset skipping keeps them out.
    impostors = [_record(3, "other3"), _record(4, "other4")]
    _write(sink, [*impostors, *_records(range(5, 8), objects=0)])
    media = [m for (m,) in _query(settings, "SELECT media_id FROM frame_metadata ORDER BY source_offset")]
    assert media == [f"m{i}" for i in range(8)]
    assert sink.load_offsets() == {(TOPIC, 0): 8}
    assert sink.stats.records_skipped == 2


def test_offsets_never_move_back(settings: Settings, sink: PostgresSink) -> None:
    _write(sink, _records(range(10), objects=0))
    sink.write([], {(TOPIC, 0): 4})  # a stale writer's offsets
    assert sink.load_offsets() == {(TOPIC, 0): 10}


def test_daily_partitions_follow_the_record_timestamps(settings: Settings, sink: PostgresSink) -> None:
    recs = [
        _record(0, "a", ts_ms=T0_MS),
        _record(1, "b", ts_ms=T0_MS + DAY_MS),
        _record(2, "c", ts_ms=T0_MS + 9 * DAY_MS),
    ]
    _write(sink, recs)
    placed = _query(settings, "SELECT media_id, tableoid::regclass::text FROM frame_metadata ORDER BY media_id")
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
    _write(sink, [_record(i, f"m{i}", ts_ms=ts + 1000) for i, ts in enumerate(stamps)])
    dropped = drop_old_partitions(settings, 7, today=today)
    with connect(settings) as conn:
        left = sorted(existing_partitions(conn))
    assert dropped == ["frame_metadata_p20240310", "frame_metadata_p20240312"]
    assert left == [date(2024, 3, 13), date(2024, 3, 20)]
    assert sorted(str(m) for (m,) in _query(settings, "SELECT media_id FROM frame_metadata")) == ["m2", "m3"]


def test_workers_creating_the_same_partitions_at_once_do_not_collide(settings: Settings, sink: PostgresSink) -> None:
    days = [date(2024, 1, d) for d in range(1, 6)]
    barrier, errors = threading.Barrier(5), []

    def run() -> None:
        try:
            with connect(settings) as conn:
                barrier.wait()
                ensure_partitions(conn, days)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    with connect(settings) as conn:
        assert sorted(existing_partitions(conn)) == days


# -- crashes -----------------------------------------------------------------------------------


def test_a_connection_killed_mid_transaction_leaves_neither_rows_nor_offsets(
    settings: Settings, sink: PostgresSink
) -> None:
    records = _records(range(4), objects=3)
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
        writer = threading.Thread(target=lambda: _capture(failure, lambda: _write(sink, records)))
        writer.start()
        wait_for(lambda: _waiting_on_lock(settings, pid), 30, "the sink's insert to wait on the blocker")
        _query(settings, "SELECT pg_terminate_backend(%s)", (pid,))
        writer.join(30)
        blocker.execute("ROLLBACK")
    assert failure and isinstance(failure[0], psycopg.OperationalError)
    assert _count(settings) == 0
    assert _query(settings, "SELECT count(*) FROM sink_offsets WHERE next_offset > 0") == [(0,)]
    restarted = PostgresSink(settings)
    restarted.start()
    try:
        assert restarted.load_offsets() == {}  # even the new offset row was rolled back
        _write(restarted, records)
        assert _count(settings) == 16 and restarted.load_offsets() == {(TOPIC, 0): 4}
    finally:
        restarted.close()


def _capture(into: list[BaseException], fn: object) -> None:
    try:
        fn()  # type: ignore[operator]
    except BaseException as exc:
        into.append(exc)


def _waiting_on_lock(settings: Settings, pid: int) -> bool:
    rows = _query(settings, "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
    return rows == [("Lock",)]


def test_a_row_the_database_refuses_rolls_back_the_whole_batch(settings: Settings, sink: PostgresSink) -> None:
    _write(sink, _records(range(2), objects=0))
    before = _snapshot(settings)
    # split() would send this batch to the DLQ; write() is handed it anyway, after good ones.
    bad = _batch("bad", objects=1)
    bad = dataclasses.replace(bad, rows=(bad.rows[0], dataclasses.replace(bad.rows[1], label="x\x00y")))
    records = [
        *_records(range(2, 4), objects=0),
        InputRecord(TOPIC, 0, 4, b"bad", encode_vector_batch(bad), timestamp_ms=T0_MS),
    ]
    with pytest.raises(psycopg.DataError):
        sink.write(records, {(TOPIC, 0): 5})
    assert _snapshot(settings) == before
    assert sink.load_offsets() == {(TOPIC, 0): 2}
    _write(sink, _records(range(2, 4), objects=0))  # the connection is usable again
    assert _count(settings) == 4


# -- through the broker --------------------------------------------------------------------------


def _produce(settings: Settings, first: int, n: int) -> None:
    p = producer(settings)
    name = topics(settings).vectors.name
    for i in range(first, first + n):
        p.produce(name, key=f"m{i}".encode(), value=encode_vector_batch(_batch(f"m{i}", objects=i % 4)))
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
        _write(sink, records)
    finally:
        sink.close()


def _run_until(settings: Settings, rows: int) -> PostgresSink:
    runner, sink = _runner(settings)
    with ThreadWorker(runner):
        wait_for(lambda: _count(settings) == rows, 90, f"{rows} rows")
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
    dupes = _query(settings, "SELECT count(*) - count(DISTINCT point_id) FROM frame_metadata")
    assert dupes == [(0,)]
    assert _query(settings, "SELECT sum(next_offset) FROM sink_offsets") == [(60,)]

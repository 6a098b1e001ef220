"""Frame thumbnails through sink-postgres into the real PostgreSQL, and read back for the service.

A thumbnail is written in the same transaction as its frame's metadata rows and the sink's
offsets, lives in the same daily partitions' lifetime, and ``read_thumbnail`` returns the latest.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from PIL import Image

from consumers.sink_postgres.sink import PostgresSink
from mediavec.settings import Settings
from schemas import encode_vector_batch
from stores.metadb import connect, drop_old_partitions, dsn, migrate, read_thumbnail
from stores.metadb.migrate import bundled_migrations
from stores.metadb.partitions import existing_partitions, partition_name
from stores.metadb.thumbnails import Thumbnail
from streams.stage import InputRecord
from tests.pgutil import DAY_MS, T0_MS, TOPIC, offsets_snapshot, row_count, sql, vector_batch, write_batch

pytestmark = pytest.mark.integration


def jpeg(shade: int) -> bytes:
    """A real 128 x 72 JPEG, one shade of grey, so each test thumbnail is told apart by its bytes."""
    buf = io.BytesIO()
    Image.new("RGB", (128, 72), (shade, shade, shade)).save(buf, "JPEG", quality=70)
    return buf.getvalue()


def thumb_record(offset: int, media: str, shade: int = 100, ts_ms: int = T0_MS, objects: int = 1) -> InputRecord:
    """A vector batch record of frame 0 of ``media`` that carries the frame's thumbnail (1280 x 720 frame)."""
    batch = dataclasses.replace(vector_batch(media, objects), frame_width=1280, frame_height=720, thumbnail=jpeg(shade))
    return InputRecord(TOPIC, 0, offset, media.encode(), encode_vector_batch(batch), timestamp_ms=ts_ms)


def thumbnails_snapshot(settings: Settings) -> list[tuple[object, ...]]:
    return sql(settings, "SELECT xmin::text, * FROM frame_thumbnails ORDER BY media_id, frame_index, ingested_at")


@pytest.fixture
def sink(settings: Settings) -> Iterator[PostgresSink]:
    s = PostgresSink(settings)
    s.start()
    yield s
    s.close()


def test_thumbnails_commit_with_their_rows_and_offsets_and_a_redelivery_changes_nothing(
    settings: Settings, sink: PostgresSink
) -> None:
    records = [thumb_record(i, f"m{i}", shade=40 * i) for i in range(3)]
    write_batch(sink, records)
    stored = sql(
        settings,
        "SELECT media_id, frame_index, width, height, jpeg, collection, source_offset, ingested_at "
        "FROM frame_thumbnails ORDER BY media_id",
    )
    at = datetime(2024, 3, 1, 12, tzinfo=UTC)
    assert stored == [(f"m{i}", 0, 1280, 720, jpeg(40 * i), "c1", i, at) for i in range(3)]
    assert row_count(settings) == 6 and sink.stats.thumbnails_inserted == 3
    # One transaction wrote the rows, the thumbnails and the offsets: they share its id.
    xids = sql(
        settings,
        "SELECT xmin::text FROM frame_metadata UNION SELECT xmin::text FROM frame_thumbnails "
        "UNION SELECT xmin::text FROM sink_offsets",
    )
    assert len(xids) == 1

    thumbs, offsets = thumbnails_snapshot(settings), offsets_snapshot(settings)
    write_batch(sink, records)  # redelivered after a crash before the ack
    assert thumbnails_snapshot(settings) == thumbs and offsets_snapshot(settings) == offsets
    assert sink.stats.thumbnails_inserted == 3 and sink.stats.records_skipped == 3


def test_a_refused_batch_rolls_back_the_thumbnails_of_its_poll_too(settings: Settings, sink: PostgresSink) -> None:
    bad = vector_batch("bad", objects=1)
    bad = dataclasses.replace(bad, rows=(bad.rows[0], dataclasses.replace(bad.rows[1], label="x\x00y")))
    records = [
        thumb_record(0, "good"),
        InputRecord(TOPIC, 0, 1, b"bad", encode_vector_batch(bad), timestamp_ms=T0_MS),
    ]
    with pytest.raises(psycopg.DataError):
        sink.write(records, {(TOPIC, 0): 2})  # split() would have dead-lettered "bad"
    assert thumbnails_snapshot(settings) == [] and row_count(settings) == 0
    assert sink.load_offsets() == {}


def test_retention_drops_the_thumbnail_partitions_with_the_metadata_ones(
    settings: Settings, sink: PostgresSink
) -> None:
    today = date(2024, 3, 20)
    midnight = [datetime.combine(today - timedelta(d), datetime.min.time(), UTC) for d in (9, 8, 0)]
    write_batch(
        sink, [thumb_record(i, f"m{i}", ts_ms=int(t.timestamp() * 1000) + 1000) for i, t in enumerate(midnight)]
    )
    with connect(settings) as conn:
        assert sorted(existing_partitions(conn, "frame_thumbnails")) == [date(2024, 3, d) for d in (11, 12, 20)]
    dropped = drop_old_partitions(settings, 7, today=today)
    assert dropped == [
        partition_name(date(2024, 3, d), t) for d in (11, 12) for t in ("frame_metadata", "frame_thumbnails")
    ]
    with connect(settings) as conn:
        assert sorted(existing_partitions(conn, "frame_thumbnails")) == [date(2024, 3, 20)]
    assert sql(settings, "SELECT media_id FROM frame_thumbnails") == [("m2",)]
    assert read_thumbnail(settings, "m0", 0) is None


def test_days_partitioned_before_the_thumbnail_table_existed_get_its_partition_on_the_next_write(
    settings: Settings,
) -> None:
    """An upgrade: frame_metadata already has today's partition when migration 0002 runs."""
    with connect(settings) as conn:
        assert migrate(conn, bundled_migrations()[:1]) == [1]
        conn.execute(
            "CREATE TABLE frame_metadata_p20240301 PARTITION OF frame_metadata "
            "FOR VALUES FROM ('2024-03-01 00:00:00+00') TO ('2024-03-02 00:00:00+00')"
        )
    sink = PostgresSink(settings)
    sink.start()  # applies 0002
    try:
        write_batch(sink, [thumb_record(0, "m0")])
    finally:
        sink.close()
    assert sql(settings, "SELECT tableoid::regclass::text FROM frame_thumbnails") == [("frame_thumbnails_p20240301",)]


def test_read_thumbnail_returns_the_latest_ingest_of_the_frame(settings: Settings, sink: PostgresSink) -> None:
    assert read_thumbnail(settings, "m", 0) is None  # a database sink-postgres never wrote to
    # The same frame ingested three times (a reprocess), the newest first on the topic, and another frame.
    write_batch(
        sink,
        [
            thumb_record(0, "m", shade=200, ts_ms=T0_MS + 2 * DAY_MS),
            thumb_record(1, "m", shade=10, ts_ms=T0_MS),
            thumb_record(2, "m", shade=90, ts_ms=T0_MS + DAY_MS),
            thumb_record(3, "other", shade=50),
        ],
    )
    latest = Thumbnail(jpeg(200), 1280, 720)
    assert read_thumbnail(settings, "m", 0) == latest
    assert read_thumbnail(dsn(settings), "m", 0) == latest
    with connect(settings) as conn:
        assert read_thumbnail(conn, "m", 0) == latest
        assert read_thumbnail(conn, "other", 0) == Thumbnail(jpeg(50), 1280, 720)
        assert read_thumbnail(conn, "m", 1) is None
        assert read_thumbnail(conn, "nobody", 0) is None
        assert read_thumbnail(conn, "m\x00", 0) is None  # what PostgreSQL text cannot hold matches nothing
        assert read_thumbnail(conn, "m", 2**40) is None  # beyond the integer column
        assert not conn.closed  # a caller's connection stays open for the next read
    with Image.open(io.BytesIO(latest.jpeg)) as image:
        assert image.format == "JPEG" and image.size == (128, 72)

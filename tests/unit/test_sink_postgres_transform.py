"""sink-postgres's pure transform: vector batch record -> frame_metadata rows."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import numpy as np

from consumers.sink_postgres.transform import ingest_day, ingested_at, problem, rows_from_batch, thumbnail_rows
from schemas import VectorBatch, VectorRow, point_id
from streams.stage import InputRecord

MODEL = "open_clip/test/random"
TS_MS = 1_700_000_000_123  # 2023-11-14T22:13:20.123Z


def _batch(rows: tuple[VectorRow, ...], **kw: object) -> VectorBatch:
    vectors = np.zeros((len(rows), 8), dtype=np.float16)
    fields: dict[str, object] = {
        "source_url": "http://127.0.0.1/a.jpg",
        "collection": "c1",
        "content_sha256": "ab" * 32,
        "metadata": {"team": "news", "lang": "fr"},
        "run_id": "run-1",
        "published_at": 1_700_000_000.5,
        **kw,
    }
    return VectorBatch(MODEL, vectors, rows, **fields)  # type: ignore[arg-type]


def _record(offset: int = 7, timestamp_ms: int = TS_MS) -> InputRecord:
    return InputRecord("p.vectors", 3, offset, b"m1", b"", timestamp_ms=timestamp_ms)


def _scene(media: str = "m1", frame: int = 0) -> VectorRow:
    return VectorRow(point_id(MODEL, media, frame, "scene"), "scene", media, frame, 1.5)


def _object(index: int, box: tuple[float, float, float, float] | None, label: str | None) -> VectorRow:
    pid = point_id(MODEL, "m1", 0, "object", index)
    return VectorRow(pid, "object", "m1", 0, 1.5, index, box, label, 0.75 if label else None)


def test_one_row_per_vector_with_batch_fields_repeated() -> None:
    rows = rows_from_batch(_batch((_scene(), _object(1, (1.0, 2.0, 30.0, 40.0), "cat"))), _record())
    assert len(rows) == 2
    scene, obj = rows
    assert scene.point_id == point_id(MODEL, "m1", 0, "scene")
    assert (scene.media_id, scene.frame_index, scene.timestamp_s, scene.space) == ("m1", 0, 1.5, "scene")
    assert (obj.space, obj.object_index, obj.label, obj.score) == ("object", 1, "cat", 0.75)
    assert (obj.box_x1, obj.box_y1, obj.box_x2, obj.box_y2) == (1.0, 2.0, 30.0, 40.0)
    for r in rows:
        assert (r.model, r.collection, r.source_url, r.run_id) == (MODEL, "c1", "http://127.0.0.1/a.jpg", "run-1")
        assert r.content_sha256 == "ab" * 32
        assert json.loads(r.metadata) == {"team": "news", "lang": "fr"}
        assert (r.source_topic, r.source_partition, r.source_offset) == ("p.vectors", 3, 7)


def test_missing_box_label_and_score_are_nulls() -> None:
    (row,) = rows_from_batch(_batch((_object(2, None, None),)), _record())
    assert (row.box_x1, row.box_y1, row.box_x2, row.box_y2, row.label, row.score) == (None,) * 6


def test_ingested_at_is_the_record_timestamp_so_redeliveries_agree() -> None:
    batch = _batch((_scene(),))
    first = rows_from_batch(batch, _record(offset=7))
    again = rows_from_batch(batch, _record(offset=7))
    assert first == again
    assert first[0].ingested_at == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    assert first[0].published_at == datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC)


def test_ingested_at_falls_back_to_published_at_then_epoch() -> None:
    assert ingested_at(-1, 86_400.25) == datetime(1970, 1, 2, 0, 0, 0, 250000, tzinfo=UTC)
    assert ingested_at(0, 0.0) == datetime(1970, 1, 1, tzinfo=UTC)
    (row,) = rows_from_batch(_batch((_scene(),), published_at=0.0), _record(timestamp_ms=0))
    assert row.published_at is None and row.ingested_at == datetime(1970, 1, 1, tzinfo=UTC)


def test_empty_batch_yields_no_rows_and_days_follow_timestamps() -> None:
    assert rows_from_batch(_batch(()), _record()) == []
    day_ms = 86_400_000
    batch = _batch((_scene(),))
    assert ingest_day(batch, _record(1, TS_MS)) == date(2023, 11, 14)
    assert ingest_day(batch, _record(2, TS_MS + day_ms)) == date(2023, 11, 15)
    assert ingest_day(batch, _record(3, 0)) == date(2023, 11, 14)  # from published_at
    assert rows_from_batch(batch, _record(2, TS_MS + day_ms))[0].ingested_at.date() == date(2023, 11, 15)


def _problem(batch: VectorBatch, record: InputRecord | None = None) -> str:
    return problem(batch, record or _record()) or ""


def test_problem_finds_what_postgresql_would_refuse() -> None:
    assert problem(_batch((_scene(), _object(1, (0, 0, 1, 1), "dog"))), _record()) is None
    bad_id = VectorRow("not-a-uuid", "scene", "m1", 0, 0.0)
    assert "not a UUID" in _problem(_batch((bad_id,)))
    braces = VectorRow("{" + point_id(MODEL, "m1", 0, "scene") + "}", "scene", "m1", 0, 0.0)
    assert "not a UUID" in _problem(_batch((braces,)))
    assert "NUL" in _problem(_batch((_object(1, None, "c\x00t"),)))
    assert "NUL" in _problem(_batch((_scene(),), metadata={"k": "v\x00"}))
    short_box = VectorRow(point_id(MODEL, "m1", 0, "object", 1), "object", "m1", 0, 0.0, 1, (1.0, 2.0))  # type: ignore[arg-type]
    assert "box has 2 numbers" in _problem(_batch((short_box,)))
    assert "beyond year 9999" in _problem(_batch((_scene(),)), _record(timestamp_ms=2**62))
    assert "beyond year 9999" in _problem(_batch((_scene(),), published_at=1e15))


def test_a_batch_with_a_thumbnail_yields_one_thumbnail_row_keyed_like_its_frame() -> None:
    jpeg = b"\xff\xd8\xff\xe0 thumb"
    batch = _batch((_scene("m1", 4), _object(1, None, None)), frame_width=640, frame_height=360, thumbnail=jpeg)
    (row,) = thumbnail_rows(batch, _record())
    assert (row.media_id, row.frame_index, row.width, row.height, row.jpeg) == ("m1", 4, 640, 360, jpeg)
    assert row.ingested_at == rows_from_batch(batch, _record())[0].ingested_at  # same day, same transaction
    assert (row.collection, row.source_topic, row.source_partition, row.source_offset) == ("c1", "p.vectors", 3, 7)
    assert thumbnail_rows(batch, _record()) == [row]  # a redelivery targets the same key


def test_batches_without_a_thumbnail_or_rows_yield_no_thumbnail_row() -> None:
    assert thumbnail_rows(_batch((_scene(),), frame_width=640, frame_height=360), _record()) == []
    assert thumbnail_rows(_batch((), thumbnail=b"\xff\xd8"), _record()) == []

"""sink-postgres's pure part: one vector batch record -> the ``frame_metadata`` rows it yields,
and the ``frame_thumbnails`` row when the batch carries its frame's thumbnail.

No Kafka and no database here. Every vector row of the batch becomes one metadata row (the
vectors themselves live in the vector stores); the batch-level fields (model, collection, source
URL, content hash, run id, metadata map) are repeated on each row so a row reads on its own.

``ingested_at`` is the Kafka timestamp of the vector batch record, not the time of the write: a
redelivered record carries the same timestamp, so it targets the same daily partition and the
same ``(point_id, ingested_at)`` key, and the insert is a no-op instead of a second row.
(PostgreSQL requires the partition key in every unique key of a partitioned table, so the key
cannot be ``point_id`` alone.) A deliberate reprocess of a frame is a new record with a new
timestamp, so it adds a row rather than overwriting one: the table is an ingest log, and the
current row of a point is the one with the latest ``ingested_at``. Thumbnails follow the same
rule under the key ``(media_id, frame_index, ingested_at)``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

from schemas.models import VectorBatch
from streams.stage import InputRecord

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIMESTAMP_MS = int((datetime(9999, 12, 30, tzinfo=UTC) - EPOCH).total_seconds() * 1000)  # Python's limit
# The canonical form schemas.ids produces; PostgreSQL's uuid input accepts it (and more).
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class FrameRow(NamedTuple):
    """One row of ``frame_metadata``, fields in the table's column order (COPY sends it as is)."""

    point_id: str  # canonical UUID text (the column is uuid)
    ingested_at: datetime
    media_id: str
    frame_index: int
    timestamp_s: float
    space: str
    object_index: int
    box_x1: float | None
    box_y1: float | None
    box_x2: float | None
    box_y2: float | None
    label: str | None
    score: float | None
    model: str
    collection: str
    source_url: str
    content_sha256: str
    run_id: str
    metadata: str  # JSON text of the request's string->string map (jsonb in the table)
    published_at: datetime | None
    source_topic: str
    source_partition: int
    source_offset: int


COLUMNS: tuple[str, ...] = FrameRow._fields


class ThumbnailRow(NamedTuple):
    """One row of ``frame_thumbnails``, fields in the table's column order."""

    media_id: str
    frame_index: int
    ingested_at: datetime
    width: int  # of the frame (the space of its boxes), not of the JPEG
    height: int
    jpeg: bytes
    collection: str
    source_topic: str
    source_partition: int
    source_offset: int


THUMBNAIL_COLUMNS: tuple[str, ...] = ThumbnailRow._fields
_NO_BOX: tuple[None, None, None, None] = (None, None, None, None)


def ingested_at(timestamp_ms: int, published_at: float = 0.0) -> datetime:
    """When a vector batch record was ingested: its Kafka timestamp (UTC, millisecond precision).

    A record without a timestamp (0 or -1, which Kafka clients never write) falls back to the
    batch's ``published_at``, then to the epoch: still a pure function of the record.
    """
    if timestamp_ms > 0:
        return EPOCH + timedelta(milliseconds=timestamp_ms)
    if published_at > 0:
        return EPOCH + timedelta(milliseconds=round(published_at * 1000))
    return EPOCH


def rows_from_batch(batch: VectorBatch, record: InputRecord) -> list[FrameRow]:
    """The metadata rows of one vector batch read from ``record`` (one per vector)."""
    at = ingested_at(record.timestamp_ms, batch.published_at)
    published = EPOCH + timedelta(seconds=batch.published_at) if batch.published_at > 0 else None
    meta = json.dumps(batch.metadata, sort_keys=True, ensure_ascii=False)
    out: list[FrameRow] = []
    for row in batch.rows:
        x1, y1, x2, y2 = row.box if row.box is not None else _NO_BOX
        out.append(
            FrameRow(
                row.point_id,
                at,
                row.media_id,
                row.frame_index,
                row.timestamp_s,
                row.space,
                row.object_index,
                x1,
                y1,
                x2,
                y2,
                row.label,
                row.score,
                batch.model,
                batch.collection,
                batch.source_url,
                batch.content_sha256,
                batch.run_id,
                meta,
                published,
                record.topic,
                record.partition,
                record.offset,
            )
        )
    return out


def thumbnail_rows(batch: VectorBatch, record: InputRecord) -> list[ThumbnailRow]:
    """The thumbnail row of one vector batch: one when it carries its frame's thumbnail, else none."""
    if batch.thumbnail is None or not batch.rows:
        return []
    first = batch.rows[0]  # a batch holds the vectors of one frame
    at = ingested_at(record.timestamp_ms, batch.published_at)
    return [
        ThumbnailRow(
            first.media_id,
            first.frame_index,
            at,
            batch.frame_width,
            batch.frame_height,
            batch.thumbnail,
            batch.collection,
            record.topic,
            record.partition,
            record.offset,
        )
    ]


def problem(batch: VectorBatch, record: InputRecord) -> str | None:
    """Why PostgreSQL would refuse this batch's rows (so it goes to the DLQ, not into a crash loop)."""
    if record.timestamp_ms > MAX_TIMESTAMP_MS or batch.published_at * 1000 > MAX_TIMESTAMP_MS:
        return f"timestamp beyond year 9999 (record {record.timestamp_ms} ms, published_at {batch.published_at})"
    texts = [batch.model, batch.source_url, batch.collection, batch.content_sha256, batch.run_id]
    texts += [*batch.metadata.keys(), *batch.metadata.values()]
    for row in batch.rows:
        if row.box is not None and len(row.box) != 4:
            return f"point {row.point_id}: box has {len(row.box)} numbers, expected 4"
        if not _is_uuid(row.point_id):
            return f"point id {row.point_id[:64]!r} is not a UUID in canonical form"
        texts += [row.media_id, row.space, row.label or ""]
    if any("\x00" in t for t in texts):
        return "a text field contains a NUL character, which PostgreSQL text cannot hold"
    return None


def ingest_day(batch: VectorBatch, record: InputRecord) -> date:
    """The UTC day (daily partition) the rows of ``batch`` read from ``record`` fall in."""
    return ingested_at(record.timestamp_ms, batch.published_at).date()


def _is_uuid(value: str) -> bool:
    return _UUID.fullmatch(value) is not None

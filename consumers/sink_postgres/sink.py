"""sink-postgres: vector batches -> frame metadata rows and frame thumbnails in PostgreSQL, exactly once.

Per poll (``streams.sink_runner`` calls split, then write; the rest is
:class:`consumers.sink.VectorSink`):

1. ``split``: decode each record; undecodable batches and batches PostgreSQL would refuse go to
   the DLQ; batches without vectors need no row (their offsets still advance).
2. ``write``: build the rows (pure, ``transform.py``), create the daily partitions they need in
   short transactions of their own, then in ONE transaction: lock this consumer's offset rows
   (``SELECT ... FOR UPDATE``), drop the records below the stored next offsets (a redelivery of
   an applied batch is skipped, not rewritten), binary-COPY the rest through a staging table into
   ``frame_metadata`` (``ON CONFLICT DO NOTHING`` on ``(point_id, ingested_at)``), the same for
   the thumbnails the batches carry into ``frame_thumbnails`` (on ``(media_id, frame_index,
   ingested_at)``), record the next offsets, commit. A crash anywhere before the commit leaves
   neither rows, thumbnails nor offsets.

The runner seeks to :meth:`load_offsets` on every assignment, so a restart resumes from what the
database holds. Partitioning and the keys: see ``stores/metadb/migrations/000[12]_*.sql`` and
``transform.py`` (``ingested_at`` is the record's Kafka timestamp, fixed across redeliveries).
Errors from the database propagate: the worker exits and its supervisor restarts it, and the
restarted worker redoes the batch from the stored offsets.

Durability: commits are synchronous by default. Because rows and offsets share one WAL record
stream, ``synchronous_commit=off`` (e.g. ``options='-c synchronous_commit=off'`` in the DSN)
keeps exactly-once: a server crash can lose the last few commits, but it loses their rows and
their offsets together, and the restarted sink re-reads those records from Kafka.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import chain

import psycopg

from consumers.registry import SINK_POSTGRES
from consumers.settings import ConsumerSettings
from consumers.sink import Decoded, VectorSink
from consumers.sink_postgres.transform import (
    COLUMNS,
    THUMBNAIL_COLUMNS,
    ingest_day,
    problem,
    rows_from_batch,
    thumbnail_rows,
)
from stores.metadb import StagedInsert, connect, ensure_partitions, migrate
from stores.metadb import writer as db
from stores.metadb.thumbnails import TABLE as THUMBNAILS
from streams.offsets import Offsets
from streams.stage import Failure, TopicKey

logger = logging.getLogger(__name__)


@dataclass
class WriteStats:
    """What the writes of this sink did, cumulatively (records are vector batch records)."""

    records_written: int = 0
    records_skipped: int = 0  # below the stored offsets: already applied
    rows_inserted: int = 0
    thumbnails_inserted: int = 0

    def add(self, written: int, skipped: int, inserted: int, thumbnails: int = 0) -> None:
        self.records_written += written
        self.records_skipped += skipped
        self.rows_inserted += inserted
        self.thumbnails_inserted += thumbnails


@dataclass(frozen=True)
class MetaDb:
    """The sink's store: one connection and its staging tables (metadata rows, thumbnails)."""

    conn: psycopg.Connection
    staged: StagedInsert
    thumbnails: StagedInsert

    def close(self) -> None:
        self.conn.close()


class PostgresSink(VectorSink[MetaDb]):
    name = SINK_POSTGRES.name
    input_topic: TopicKey = SINK_POSTGRES.input

    def __init__(self, settings: ConsumerSettings) -> None:
        super().__init__(settings)
        self.stats = WriteStats()

    @property
    def conn(self) -> psycopg.Connection:
        return self.store.conn

    def open_store(self) -> MetaDb:
        conn = connect(self.settings, application_name=f"mediavec.{self.name}")
        migrate(conn)
        return MetaDb(conn, StagedInsert(conn, COLUMNS), StagedInsert(conn, THUMBNAIL_COLUMNS, THUMBNAILS))

    def stored_offsets(self) -> Offsets:
        return db.load_offsets(self.conn, self.consumer_name)

    def refuse(self, polled: Decoded, claimed: dict[str, int]) -> Failure | None:
        why = problem(polled.batch, polled.record)
        if why is None:
            return None
        return Failure("invalid_frame_metadata", why, media_id=polled.batch.rows[0].media_id)

    def write_polled(self, polled: list[Decoded], offsets: Offsets) -> None:
        ensure_partitions(self.conn, {ingest_day(b, r) for r, b in polled})
        partitions = set(offsets) | {(r.topic, r.partition) for r, _ in polled}
        with self.conn.transaction():
            stored = db.lock_offsets(self.conn, self.consumer_name, partitions)
            fresh = [(r, b) for r, b in polled if r.offset >= stored.get((r.topic, r.partition), 0)]
            rows = chain.from_iterable(rows_from_batch(b, r) for r, b in fresh)
            inserted = self.store.staged.insert(self.conn, rows) if fresh else 0
            thumbs = [t for r, b in fresh for t in thumbnail_rows(b, r)]
            thumbnails = self.store.thumbnails.insert(self.conn, thumbs) if thumbs else 0
            db.advance_offsets(self.conn, self.consumer_name, offsets)
        skipped = len(polled) - len(fresh)
        self.stats.add(len(fresh), skipped, inserted, thumbnails)
        logger.debug(
            "%s: %d records written (%d new rows, %d thumbnails), %d skipped as already applied",
            self.name,
            len(fresh),
            inserted,
            thumbnails,
            skipped,
        )

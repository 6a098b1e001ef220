"""sink-postgres: vector batches -> frame metadata rows in PostgreSQL, exactly once.

Per poll (``streams.sink_runner`` calls split, then write):

1. ``split``: decode each record; undecodable batches and batches PostgreSQL would refuse go to
   the DLQ; batches without vectors need no row (their offsets still advance).
2. ``write``: build the rows (pure, ``transform.py``), create the daily partitions they need in
   short transactions of their own, then in ONE transaction: lock this consumer's offset rows
   (``SELECT ... FOR UPDATE``), drop the records below the stored next offsets (a redelivery of
   an applied batch is skipped, not rewritten), binary-COPY the rest through a staging table into
   ``frame_metadata`` (``ON CONFLICT DO NOTHING`` on ``(point_id, ingested_at)``), record the
   next offsets, commit. A crash anywhere before the commit leaves neither rows nor offsets.

The runner seeks to :meth:`load_offsets` on every assignment, so a restart resumes from what the
database holds. Partitioning and the key: see ``stores/metadb/migrations/0001_*.sql`` and
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
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import psycopg

from consumers.settings import ConsumerSettings
from consumers.sink_postgres.transform import COLUMNS, ingest_day, problem, rows_from_batch
from schemas import SchemaError, VectorBatch, decode_vector_batch
from stores.metadb import StagedInsert, connect, ensure_partitions, migrate
from stores.metadb import writer as db
from streams.stage import Failure, InputRecord, TopicKey

logger = logging.getLogger(__name__)

_Key = tuple[str, int, int]  # topic, partition, offset


@dataclass
class WriteStats:
    """What the writes of this sink did, cumulatively (records are vector batch records)."""

    records_written: int = 0
    records_skipped: int = 0  # below the stored offsets: already applied
    rows_inserted: int = 0

    def add(self, written: int, skipped: int, inserted: int) -> None:
        self.records_written += written
        self.records_skipped += skipped
        self.rows_inserted += inserted


class PostgresSink:
    name = "sink-postgres"
    input_topic: TopicKey = "vectors"

    def __init__(self, settings: ConsumerSettings) -> None:
        self.settings = settings
        self.consumer_name = f"{settings.topics.prefix}mediavec.{self.name}"
        self.stats = WriteStats()
        self._conn: psycopg.Connection | None = None
        self._staged: StagedInsert | None = None
        self._decoded: dict[_Key, VectorBatch] = {}  # split's work, reused by the write that follows

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None:
            raise RuntimeError("sink not started")
        return self._conn

    @property
    def _staging(self) -> StagedInsert:
        if self._staged is None:
            raise RuntimeError("sink not started")
        return self._staged

    def start(self) -> None:
        conn = connect(self.settings, application_name=f"mediavec.{self.name}")
        migrate(conn)
        self._staged = StagedInsert(conn, COLUMNS)
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._staged = None
        self._decoded.clear()

    def load_offsets(self) -> dict[tuple[str, int], int]:
        return db.load_offsets(self.conn, self.consumer_name)

    def split(self, records: Sequence[InputRecord]) -> tuple[list[InputRecord], list[tuple[InputRecord, Failure]]]:
        self._decoded.clear()
        good: list[InputRecord] = []
        bad: list[tuple[InputRecord, Failure]] = []
        for r in records:
            try:
                batch = decode_vector_batch(r.value)
            except SchemaError as exc:
                bad.append((r, Failure("invalid_vector_batch", str(exc))))
                continue
            if not batch.rows:
                continue  # no vector, no row
            why = problem(batch, r)
            if why is not None:
                bad.append((r, Failure("invalid_frame_metadata", why, media_id=batch.rows[0].media_id)))
                continue
            self._decoded[_key(r)] = batch
            good.append(r)
        return good, bad

    def write(self, records: Sequence[InputRecord], offsets: dict[tuple[str, int], int]) -> None:
        batches = [(r, self._batch(r)) for r in records]
        self._decoded.clear()
        ensure_partitions(self.conn, {ingest_day(b, r) for r, b in batches})
        partitions = set(offsets) | {(r.topic, r.partition) for r in records}
        with self.conn.transaction():
            stored = db.lock_offsets(self.conn, self.consumer_name, partitions)
            fresh = [(r, b) for r, b in batches if r.offset >= stored.get((r.topic, r.partition), 0)]
            rows = chain.from_iterable(rows_from_batch(b, r) for r, b in fresh)
            inserted = self._staging.insert(self.conn, rows) if fresh else 0
            db.advance_offsets(self.conn, self.consumer_name, offsets)
        skipped = len(batches) - len(fresh)
        self.stats.add(len(fresh), skipped, inserted)
        logger.debug(
            "%s: %d records written (%d new rows), %d skipped as already applied",
            self.name,
            len(fresh),
            inserted,
            skipped,
        )

    def _batch(self, record: InputRecord) -> VectorBatch:
        cached = self._decoded.get(_key(record))
        return cached if cached is not None else decode_vector_batch(record.value)


def _key(record: InputRecord) -> _Key:
    return (record.topic, record.partition, record.offset)

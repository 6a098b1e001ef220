"""The transactional pieces of an exactly-once write: offset rows and the bulk insert.

A sink's write is one transaction (see ``consumers/sink_postgres/sink.py``)::

    stored = lock_offsets(...)      # SELECT ... FOR UPDATE: one writer per partition at a time
    StagedInsert.insert(...)        # only the records at or past the stored offsets
    advance_offsets(...)            # next offsets, never backwards
    COMMIT                          # rows and offsets become visible together, or neither does

Locking the offset rows first serialises two writers of one partition (a zombie after a
rebalance and its successor): the second waits, then sees the first's offsets and skips what it
already wrote. Rows go in through binary COPY into a per-session temporary staging table, then one
``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` into the partitioned table; COPY is the fast
path into PostgreSQL and the staging step is what lets it meet a unique key.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import psycopg
from psycopg import sql

Offsets = dict[tuple[str, int], int]
TABLE = "frame_metadata"


# Staged as text and cast by the INSERT: the server parses these faster than the client formats
# them (uuid), or the client has them as text already (JSON).
TEXT_STAGED = ("jsonb", "uuid")


class StagedInsert:
    """Binary COPY into a session's temporary staging table, then one INSERT ... ON CONFLICT.

    The staging table has the target's columns (those of a ``TEXT_STAGED`` type as text, cast on
    the way in) and is emptied at every commit. Column types are read from the database, so the
    migration files stay the only place the schema is written down.
    """

    def __init__(self, conn: psycopg.Connection, columns: Sequence[str], table: str = TABLE) -> None:
        self.columns = tuple(columns)
        self.table = table
        self.staging = f"{table}_staging"
        cast = self._create(conn)
        self._types = self._column_types(conn)
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in self.columns)
        picks = sql.SQL(", ").join(
            sql.SQL("{}::{}").format(sql.Identifier(c), sql.SQL(cast[c])) if c in cast else sql.Identifier(c)
            for c in self.columns
        )
        # Rendered once: composing the statements again for every poll cost 3% of a sink's write.
        copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(sql.Identifier(self.staging), cols)
        insert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
            sql.Identifier(table), cols, picks, sql.Identifier(self.staging)
        )
        self._copy, self._insert = copy.as_bytes(conn), insert.as_bytes(conn)

    def insert(self, conn: psycopg.Connection, rows: Iterable[Sequence[object]]) -> int:
        """Stage ``rows`` and insert those whose key is new; return how many were inserted.

        Call once per transaction: the staging table is emptied at commit (or by the rollback).
        """
        with conn.cursor() as cur:
            with cur.copy(self._copy) as cp:
                cp.set_types(self._types)
                for row in rows:
                    cp.write_row(row)
            cur.execute(self._insert)
            return cur.rowcount

    def _create(self, conn: psycopg.Connection) -> dict[str, str]:
        """(Re)create the staging table; return the text-staged columns and their real types."""
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("pg_temp", self.staging)))
        conn.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DELETE ROWS").format(
                sql.Identifier(self.staging), sql.Identifier(self.table)
            )
        )
        rows = conn.execute(
            "SELECT attname, atttypid::regtype::text FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND atttypid::regtype::text = ANY(%s)",
            (self.table, list(TEXT_STAGED)),
        ).fetchall()
        cast = {str(name): str(typ) for name, typ in rows if name in self.columns}
        for name in sorted(cast):
            conn.execute(
                sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE text").format(
                    sql.Identifier(self.staging), sql.Identifier(name)
                )
            )
        return cast

    def _column_types(self, conn: psycopg.Connection) -> list[int]:
        rows = conn.execute(
            "SELECT attname, atttypid::int FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
            "AND NOT attisdropped",
            (f"pg_temp.{self.staging}",),
        ).fetchall()
        oids = {str(name): int(oid) for name, oid in rows}
        missing = [c for c in self.columns if c not in oids]
        if missing:
            raise ValueError(f"{self.table} has no column(s) {missing}")
        return [oids[c] for c in self.columns]


def lock_offsets(conn: psycopg.Connection, consumer: str, partitions: Iterable[tuple[str, int]]) -> Offsets:
    """Lock (creating at 0 where missing) the offset rows of ``partitions``; return their values.

    Call inside a transaction; the locks last until it ends. Rows are locked in a fixed order so
    two writers of overlapping partitions cannot deadlock.
    """
    keys = sorted(set(partitions))
    if not keys:
        return {}
    topics, parts = [t for t, _ in keys], [p for _, p in keys]
    conn.execute(
        """
        INSERT INTO sink_offsets (consumer, topic, partition, next_offset)
        SELECT %s, t, p, 0 FROM unnest(%s::text[], %s::int[]) AS k(t, p)
        ORDER BY t, p
        ON CONFLICT DO NOTHING
        """,
        (consumer, topics, parts),
    )
    rows = conn.execute(
        """
        SELECT o.topic, o.partition, o.next_offset FROM sink_offsets o
        JOIN unnest(%s::text[], %s::int[]) AS k(t, p) ON o.topic = k.t AND o.partition = k.p
        WHERE o.consumer = %s
        ORDER BY o.topic, o.partition
        FOR UPDATE OF o
        """,
        (topics, parts, consumer),
    ).fetchall()
    return {(str(t), int(p)): int(o) for t, p, o in rows}


def advance_offsets(conn: psycopg.Connection, consumer: str, offsets: Offsets) -> None:
    """Record the next offsets (rows must exist: :func:`lock_offsets` first); never moves one back."""
    if not offsets:
        return
    keys = sorted(offsets)
    conn.execute(
        """
        UPDATE sink_offsets o SET next_offset = k.n, updated_at = now()
        FROM unnest(%s::text[], %s::int[], %s::bigint[]) AS k(t, p, n)
        WHERE o.consumer = %s AND o.topic = k.t AND o.partition = k.p AND o.next_offset < k.n
        """,
        ([t for t, _ in keys], [p for _, p in keys], [offsets[k] for k in keys], consumer),
    )


def load_offsets(conn: psycopg.Connection, consumer: str) -> Offsets:
    """The next offsets ``consumer`` recorded, per (topic, partition)."""
    rows = conn.execute(
        "SELECT topic, partition, next_offset FROM sink_offsets WHERE consumer = %s", (consumer,)
    ).fetchall()
    return {(str(t), int(p)): int(o) for t, p, o in rows}

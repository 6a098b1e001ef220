"""Daily partitions of ``frame_metadata`` and ``frame_thumbnails``: created on demand, dropped by age.

A partition holds one UTC day of ``ingested_at`` and is named ``<table>_pYYYYMMDD``; the name is
the source of truth for its day (retention reads it back), so only tables created here are ever
dropped. Both tables are partitioned the same way and a day's partitions are created and dropped
together: a day's metadata rows and its thumbnails share one lifetime. Creation and dropping run
in short transactions of their own, never inside a batch's write transaction, under one advisory
transaction lock so that two workers reaching a new day at once do not race on ``CREATE TABLE``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql

from stores.metadb.thumbnails import TABLE as THUMBNAILS

logger = logging.getLogger(__name__)

PARENT = "frame_metadata"
PARENTS = (PARENT, THUMBNAILS)  # every table partitioned by day on ingested_at
PARTITION_LOCK = 0x6D76_7061_7274  # "mvpart"
_NAME = re.compile(r"^(?P<parent>[a-z_]+)_p(?P<day>\d{8})$")


def partition_name(day: date, parent: str = PARENT) -> str:
    return f"{parent}_p{day:%Y%m%d}"


def day_of(name: str, parent: str = PARENT) -> date | None:
    """The day a partition name of ``parent`` stands for, or None for a table that is not one of those."""
    m = _NAME.match(name)
    if m is None or m.group("parent") != parent:
        return None
    return datetime.strptime(m.group("day"), "%Y%m%d").date()


def existing_partitions(conn: psycopg.Connection, parent: str = PARENT) -> dict[date, str]:
    """Partitions of ``parent`` (``frame_metadata`` by default) in the current schema, by day."""
    rows = conn.execute(
        """
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = to_regclass(%s)
        """,
        (parent,),
    ).fetchall()
    found: dict[date, str] = {}
    for (name,) in rows:
        day = day_of(name, parent)
        if day is not None:
            found[day] = name
    return found


def ensure_partitions(conn: psycopg.Connection, days: Iterable[date]) -> list[date]:
    """Create the partitions of ``days`` (of every table in ``PARENTS``) not there yet; return the days touched.

    ``conn`` must be in autocommit mode (outside any transaction): creation commits on its own.
    """
    wanted = set(days)
    if not wanted or not _missing(conn, wanted):
        return []
    created: list[tuple[date, str]] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
        for day, parent in _missing(conn, wanted):  # re-checked under the lock
            conn.execute(_create_sql(day, parent))
            created.append((day, parent))
    for day, parent in created:
        logger.info("created partition %s", partition_name(day, parent))
    return sorted({day for day, _ in created})


def drop_partitions_older_than(conn: psycopg.Connection, keep_days: int, today: date | None = None) -> list[str]:
    """Drop the partitions (of every table in ``PARENTS``) whose whole day lies more than ``keep_days`` days
    before ``today`` (UTC).

    ``keep_days=7`` on 2024-01-10 keeps 2024-01-03 onwards and drops 2024-01-02 and older.
    Returns the names dropped, oldest day first.
    """
    if keep_days < 0:
        raise ValueError("keep_days must be >= 0")
    cutoff = (today or datetime.now(UTC).date()) - timedelta(days=keep_days)
    dropped: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
        old = [(day, name) for parent in PARENTS for day, name in existing_partitions(conn, parent).items()]
        for day, name in sorted(old):
            if day < cutoff:
                conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                dropped.append(name)
    for name in dropped:
        logger.info("dropped partition %s (older than %d days)", name, keep_days)
    return dropped


def _missing(conn: psycopg.Connection, days: set[date]) -> list[tuple[date, str]]:
    """The (day, table) pairs of ``days`` whose partition does not exist, in order."""
    wanted = {partition_name(d, p): (d, p) for d in days for p in PARENTS}
    rows = conn.execute(
        "SELECT relname FROM pg_class WHERE relname = ANY(%s) AND relnamespace = current_schema()::regnamespace",
        (list(wanted),),
    ).fetchall()
    present = {r[0] for r in rows}
    return sorted(pair for name, pair in wanted.items() if name not in present)


def _create_sql(day: date, parent: str) -> sql.Composed:
    lo, hi = day, day + timedelta(days=1)
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
        sql.Identifier(partition_name(day, parent)),
        sql.Identifier(parent),
        sql.Literal(f"{lo.isoformat()} 00:00:00+00"),
        sql.Literal(f"{hi.isoformat()} 00:00:00+00"),
    )

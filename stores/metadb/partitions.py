"""Daily partitions of ``frame_metadata``: created on demand, dropped by age.

A partition holds one UTC day of ``ingested_at`` and is named ``frame_metadata_pYYYYMMDD``; the
name is the source of truth for its day (retention reads it back), so only tables created here
are ever dropped. Creation and dropping run in short transactions of their own, never inside a
batch's write transaction, under one advisory transaction lock so that two workers reaching a
new day at once do not race on ``CREATE TABLE``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql

logger = logging.getLogger(__name__)

PARENT = "frame_metadata"
PARTITION_LOCK = 0x6D76_7061_7274  # "mvpart"
_NAME = re.compile(rf"^{PARENT}_p(\d{{8}})$")


def partition_name(day: date) -> str:
    return f"{PARENT}_p{day:%Y%m%d}"


def day_of(name: str) -> date | None:
    """The day a partition name stands for, or None for a table that is not one of ours."""
    m = _NAME.match(name)
    return datetime.strptime(m.group(1), "%Y%m%d").date() if m else None


def existing_partitions(conn: psycopg.Connection) -> dict[date, str]:
    """Partitions of ``frame_metadata`` in the current schema, by day."""
    rows = conn.execute(
        """
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = to_regclass(%s)
        """,
        (PARENT,),
    ).fetchall()
    found: dict[date, str] = {}
    for (name,) in rows:
        day = day_of(name)
        if day is not None:
            found[day] = name
    return found


def ensure_partitions(conn: psycopg.Connection, days: Iterable[date]) -> list[date]:
    """Create the partitions of ``days`` that do not exist yet; return the days created.

    ``conn`` must be in autocommit mode (outside any transaction): creation commits on its own.
    """
    wanted = set(days)
    if not wanted or wanted <= _present(conn, wanted):
        return []
    created: list[date] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
        for day in sorted(wanted - _present(conn, wanted)):  # re-checked under the lock
            conn.execute(_create_sql(day))
            created.append(day)
    for day in created:
        logger.info("created partition %s", partition_name(day))
    return created


def drop_partitions_older_than(conn: psycopg.Connection, keep_days: int, today: date | None = None) -> list[str]:
    """Drop the partitions whose whole day lies more than ``keep_days`` days before ``today`` (UTC).

    ``keep_days=7`` on 2024-01-10 keeps 2024-01-03 onwards and drops 2024-01-02 and older.
    Returns the names dropped.
    """
    if keep_days < 0:
        raise ValueError("keep_days must be >= 0")
    cutoff = (today or datetime.now(UTC).date()) - timedelta(days=keep_days)
    dropped: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
        for day, name in sorted(existing_partitions(conn).items()):
            if day < cutoff:
                conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                dropped.append(name)
    for name in dropped:
        logger.info("dropped partition %s (older than %d days)", name, keep_days)
    return dropped


def _present(conn: psycopg.Connection, days: set[date]) -> set[date]:
    names = [partition_name(d) for d in days]
    rows = conn.execute(
        "SELECT relname FROM pg_class WHERE relname = ANY(%s) AND relnamespace = current_schema()::regnamespace",
        (names,),
    ).fetchall()
    present = {r[0] for r in rows}
    return {d for d in days if partition_name(d) in present}


def _create_sql(day: date) -> sql.Composed:
    lo, hi = day, day + timedelta(days=1)
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
        sql.Identifier(partition_name(day)),
        sql.Identifier(PARENT),
        sql.Literal(f"{lo.isoformat()} 00:00:00+00"),
        sql.Literal(f"{hi.isoformat()} 00:00:00+00"),
    )

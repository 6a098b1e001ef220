"""Operator commands on the metadata database, each opening its own connection (for the CLI)."""

from __future__ import annotations

from datetime import date

from stores.metadb.db import connect
from stores.metadb.migrate import migrate
from stores.metadb.partitions import drop_partitions_older_than
from stores.settings import StoresSettings


def migrate_database(settings: StoresSettings) -> list[int]:
    """Apply pending schema migrations; return the versions applied (workers also do this at start)."""
    with connect(settings, application_name="mediavec.migrate") as conn:
        return migrate(conn)


def drop_old_partitions(settings: StoresSettings, keep_days: int, today: date | None = None) -> list[str]:
    """Drop the daily ``frame_metadata`` and ``frame_thumbnails`` partitions older than ``keep_days`` days.

    Returns the names dropped, oldest day first.
    """
    with connect(settings, application_name="mediavec.retention") as conn:
        migrate(conn)  # a fresh database has no frame_metadata yet
        return drop_partitions_older_than(conn, keep_days, today)

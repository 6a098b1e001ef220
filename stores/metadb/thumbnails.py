"""Frame thumbnails in the metadata database: the read the search service makes per hit.

sink-postgres writes ``frame_thumbnails`` (``migrations/0002_frame_thumbnails.sql``) in the same
transaction as the frame's metadata rows; a frame ingested more than once has a row per ingest,
and the one to show is the latest.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import psycopg

from stores.metadb.db import CONNECT_TIMEOUT_S, connect
from stores.settings import StoresSettings

TABLE = "frame_thumbnails"
_LATEST = f"""
SELECT jpeg, width, height FROM {TABLE}
WHERE media_id = %s AND frame_index = %s
ORDER BY ingested_at DESC
LIMIT 1
"""


@dataclass(frozen=True)
class Thumbnail:
    """A frame's JPEG thumbnail; ``width`` x ``height`` is the frame's size (the space of its boxes), 0 unknown."""

    jpeg: bytes
    width: int
    height: int


def read_thumbnail(
    conn_or_settings: psycopg.Connection | StoresSettings | str, media_id: str, frame_index: int
) -> Thumbnail | None:
    """The latest thumbnail of frame ``frame_index`` of ``media_id``, or None when there is none.

    ``conn_or_settings``: an open autocommit connection (a service keeps one), or settings (the
    DSN from ``MEDIAVEC_POSTGRES__DSN`` or the dev stack's file, see :mod:`stores.metadb.db`) or
    a DSN, for which a connection is opened and closed here. A database where sink-postgres never
    ran (no table yet) has no thumbnails; a media id PostgreSQL text cannot hold matches none.
    """
    if "\x00" in media_id or not -(2**31) <= frame_index < 2**31:
        return None
    with _connection(conn_or_settings) as conn:
        try:
            row = conn.execute(_LATEST, (media_id, frame_index)).fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    if row is None:
        return None
    jpeg, width, height = row
    return Thumbnail(bytes(jpeg), int(width), int(height))


def _connection(target: psycopg.Connection | StoresSettings | str) -> AbstractContextManager[psycopg.Connection]:
    """``target`` itself when it is a connection (left open), else a new one closed on exit."""
    if isinstance(target, psycopg.Connection):
        return nullcontext(target)
    if isinstance(target, str):
        return psycopg.connect(
            target, autocommit=True, application_name="mediavec.thumbnails", connect_timeout=CONNECT_TIMEOUT_S
        )
    return connect(target, application_name="mediavec.thumbnails")

"""Versioned schema migrations: numbered SQL files, each applied once, in its own transaction.

Files are ``migrations/<number>_<name>.sql`` beside this module, applied in numeric order. The
``schema_migrations`` table records each applied version with a checksum of its text; an applied
file that changed since is refused (write a new migration instead). A session-level advisory
lock is held for the whole run, so workers starting together take turns: the first applies, the
others then find everything applied. A file that fails rolls back alone; the ones before it stay.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg

logger = logging.getLogger(__name__)

# pg_advisory_lock key shared by every mediavec process that migrates this database.
MIGRATION_LOCK = 0x6D76_6D69_6772  # "mvmigr"
_FILE = re.compile(r"^(\d+)_([A-Za-z0-9_.-]+)\.sql$")

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The migration files or the database's record of them are inconsistent."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(files: Iterable[tuple[str, str]]) -> list[Migration]:
    """Parse (file name, text) pairs into migrations sorted by number; non-SQL names are ignored."""
    found: dict[int, Migration] = {}
    for filename, text in files:
        m = _FILE.match(filename)
        if m is None:
            if filename.endswith(".sql"):
                raise MigrationError(f"migration file {filename!r} is not named <number>_<name>.sql")
            continue
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"two migrations numbered {version}: {found[version].name!r}, {filename!r}")
        found[version] = Migration(version, filename, text)
    return [found[v] for v in sorted(found)]


def directory_migrations(directory: Path) -> list[Migration]:
    """The migrations in ``directory`` (used for tests and for out-of-tree schemas)."""
    return load_migrations((p.name, p.read_text()) for p in directory.iterdir() if p.is_file())


def bundled_migrations() -> list[Migration]:
    """The migrations shipped in ``stores/metadb/migrations``."""
    folder = resources.files("stores.metadb") / "migrations"
    return load_migrations((p.name, p.read_text()) for p in folder.iterdir() if p.is_file())


def migrate(conn: psycopg.Connection, migrations: Sequence[Migration] | None = None) -> list[int]:
    """Apply the migrations not yet applied; return their versions (empty when up to date).

    ``conn`` must be in autocommit mode: each migration gets its own transaction here.
    """
    if not conn.autocommit:
        raise MigrationError("migrate() needs an autocommit connection (it manages its own transactions)")
    todo = bundled_migrations() if migrations is None else list(migrations)
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        conn.execute(_BOOKKEEPING)
        applied = _applied(conn)
        _check_unchanged(todo, applied)
        done = [_apply(conn, m) for m in todo if m.version not in applied]
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return done


def applied_versions(conn: psycopg.Connection) -> list[int]:
    """Versions recorded in ``schema_migrations``, ascending (empty before the first migration)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return []
    return sorted(_applied(conn))


def _applied(conn: psycopg.Connection) -> dict[int, str]:
    rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
    return {int(v): str(c) for v, c in rows}


def _check_unchanged(migrations: Sequence[Migration], applied: dict[int, str]) -> None:
    for m in migrations:
        if m.version in applied and applied[m.version] != m.checksum:
            raise MigrationError(f"migration {m.name} changed after it was applied; add a new migration instead")


def _apply(conn: psycopg.Connection, m: Migration) -> int:
    logger.info("applying schema migration %s", m.name)
    with conn.transaction():
        conn.execute(m.sql.encode())  # no parameters: the simple protocol runs every statement of the file
        conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
            (m.version, m.name, m.checksum),
        )
    return m.version

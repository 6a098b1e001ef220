"""Aliases: the name searches use, switched atomically from one collection version to another.

A Qdrant server keeps them itself (one ``update_collection_aliases`` call deletes and creates in
one atomic step). The embedded stores keep ``aliases.json`` beside their data, replaced by an
atomic rename under its own lock file, so aliases can be switched while a sink owns the store.
An alias maps a name (``products``) to a physical collection (``products-v2__<model slug>``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mediavec.settings import Settings

if TYPE_CHECKING:
    import psycopg


class AliasBook(ABC):
    @abstractmethod
    def all(self) -> dict[str, str]:
        """alias -> physical collection."""

    @abstractmethod
    def switch(self, alias: str, collection: str) -> str | None:
        """Point ``alias`` at ``collection`` atomically; returns what it pointed at before."""

    @abstractmethod
    def delete(self, alias: str) -> None: ...

    def get(self, alias: str) -> str | None:
        return self.all().get(alias)


class FileAliases(AliasBook):
    """aliases.json next to an embedded store (or the encrypted index)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "aliases.json"
        self._lock_path = directory / "aliases.lock"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock_path.open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def all(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return {str(k): str(v) for k, v in data.items()}

    def _write(self, data: dict[str, str]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)  # readers see the old or the new file, never half of one
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def switch(self, alias: str, collection: str) -> str | None:
        with self._locked():
            data = self.all()
            before = data.get(alias)
            data[alias] = collection
            self._write(data)
            return before

    def delete(self, alias: str) -> None:
        with self._locked():
            data = self.all()
            data.pop(alias, None)
            self._write(data)


class QdrantAliases(AliasBook):
    """Aliases kept by Qdrant itself (server, or qdrant-client local mode in tests)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def all(self) -> dict[str, str]:
        return {a.alias_name: a.collection_name for a in self.client.get_aliases().aliases}

    def switch(self, alias: str, collection: str) -> str | None:
        from qdrant_client import models

        before = self.get(alias)
        ops: list[Any] = []
        if before is not None:
            ops.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        ops.append(
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=collection, alias_name=alias))
        )
        self.client.update_collection_aliases(change_aliases_operations=ops)
        return before

    def delete(self, alias: str) -> None:
        from qdrant_client import models

        if self.get(alias) is not None:
            op = models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))
            self.client.update_collection_aliases(change_aliases_operations=[op])


def alias_book(settings: Settings) -> AliasBook:
    if settings.qdrant.url:
        from stores.vectorstore.server import remote_client

        return QdrantAliases(remote_client(settings.qdrant))
    return FileAliases(settings.qdrant_path)


class VersionInUse(RuntimeError):
    """An alias still points at the version someone asked to drop."""


def drop_version(settings: Settings, version: str) -> dict[str, list[str]]:
    """Delete every store's data of one collection version; refused while an alias points at it.

    Qdrant collections ``<version>__*``, the encrypted index's ``<version>__*`` (when its key is
    configured) and the PostgreSQL rows of that collection. Returns what was dropped, by store.
    """
    from stores.vectorstore import open_store

    prefix = f"{version}__"
    in_use = sorted(a for a, t in alias_book(settings).all().items() if t.startswith(prefix))
    if in_use:
        raise VersionInUse(f"aliases {in_use} still point at {version}; switch them first")
    dropped: dict[str, list[str]] = {}
    with open_store(settings) as store:
        dropped["qdrant"] = [c for c in store.collections() if c.startswith(prefix)]
        for name in dropped["qdrant"]:
            store.delete_collection(name)
    if settings.encindex.key_file or settings.encindex.key_env:
        from stores.encindex import open_encrypted_store

        with open_encrypted_store(settings) as enc:
            dropped["encrypted"] = [c for c in enc.collections() if c.startswith(prefix)]
            for name in dropped["encrypted"]:
                enc.delete_collection(name)
    dropped["postgres"] = _drop_rows(settings, version)
    return dropped


def _drop_rows(settings: Settings, version: str) -> list[str]:
    import psycopg

    from stores.metadb import connect

    try:
        with connect(settings) as conn:
            n = _delete_rows(conn, "frame_metadata", version)
            _delete_rows(conn, "frame_thumbnails", version)
    except psycopg.OperationalError:
        return []  # no PostgreSQL configured or reachable: nothing of this version lives there
    return [f"{n} rows of collection {version}"] if n else []


def _delete_rows(conn: psycopg.Connection[Any], table: str, version: str) -> int:
    """Delete a version's rows from one metadata table (autocommit); 0 when no sink made the table yet."""
    import psycopg

    try:
        return conn.execute(f"DELETE FROM {table} WHERE collection = %s", (version,)).rowcount
    except psycopg.errors.UndefinedTable:
        return 0

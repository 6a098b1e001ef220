"""An embedded store answers other processes' queries: the process that owns it serves them.

An embedded store (qdrant-edge, or qdrant-client's local mode) belongs to one process, the one that
holds its directory lock: in a running pipeline, the Qdrant sink. So that people can search while
it ingests, the owner also serves read-only queries on a loopback port (:class:`QueryServer`), and
a process that finds the store locked reads through :class:`SharedStore`, a read-only
:class:`QdrantStore` that forwards each call there.

- The port and a random token are in ``<store dir>/.query.json`` (mode 0600, written atomically,
  removed on close): only the user who may read the store directory can query it. The token is a
  secret and never logged.
- On the owner's side every call, its own writes and the queries it serves, goes through one lock
  (:class:`Guarded`), so a query sees a write whole or not at all.
- Only reads are served: search, count, dim, retrieve, collections, offsets. A write through a
  :class:`SharedStore` raises :class:`VectorStoreError`.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from aiohttp import web

from stores.vectorstore.base import (
    DimensionMismatchError,
    Hit,
    Offsets,
    QdrantStore,
    StoredPoint,
    StoreLockedError,
    UnknownCollectionError,
    VectorStore,
    VectorStoreError,
)
from stores.vectorstore.filters import SearchFilter
from stores.vectorstore.lock import write_atomic
from streams.loopthread import LoopThread

logger = logging.getLogger(__name__)

QUERY_FILE = ".query.json"
CALL_TIMEOUT_S = 30.0
STARTUP_GRACE_S = 5.0  # how long a reader waits for an owner that holds the lock to publish its query file
MAX_REQUEST_BYTES = 1024 * 1024
_ERRORS: dict[str, type[VectorStoreError]] = {
    "UnknownCollectionError": UnknownCollectionError,
    "DimensionMismatchError": DimensionMismatchError,
    "VectorStoreError": VectorStoreError,
}
T = TypeVar("T")


class Guarded(QdrantStore):
    """A store whose every call holds one lock: the owner's writes and the queries it serves."""

    def __init__(self, inner: QdrantStore) -> None:
        self.inner = inner
        self.mutex = threading.RLock()
        self.server: QueryServer | None = None

    def _do(self, fn: Callable[[], T]) -> T:
        with self.mutex:
            return fn()

    def ensure_collection(self, name: str, dim: int) -> None:
        self._do(lambda: self.inner.ensure_collection(name, dim))

    def upsert(self, name: str, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        self._do(lambda: self.inner.upsert(name, ids, vectors, payloads))

    def search(
        self,
        name: str,
        vector: np.ndarray,
        limit: int = 10,
        *,
        space: str | None = None,
        where: SearchFilter | None = None,
    ) -> list[Hit]:
        return self._do(lambda: self.inner.search(name, vector, limit, space=space, where=where))

    def count(self, name: str, *, space: str | None = None, where: SearchFilter | None = None) -> int:
        return self._do(lambda: self.inner.count(name, space=space, where=where))

    def dim(self, name: str) -> int | None:
        return self._do(lambda: self.inner.dim(name))

    def retrieve(self, name: str, ids: list[str], with_vectors: bool = True) -> list[StoredPoint]:
        return self._do(lambda: self.inner.retrieve(name, ids, with_vectors))

    def collections(self) -> list[str]:
        return self._do(self.inner.collections)

    def delete_collection(self, name: str) -> None:
        self._do(lambda: self.inner.delete_collection(name))

    def load_offsets(self, consumer: str) -> Offsets:
        return self._do(lambda: self.inner.load_offsets(consumer))

    def save_offsets(self, consumer: str, offsets: Offsets) -> None:
        self._do(lambda: self.inner.save_offsets(consumer, offsets))

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()  # no query reaches a closing store
            self.server = None
        self._do(self.inner.close)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # backend extras (EdgeStore.optimize), unguarded


def serve_queries(store: QdrantStore, path: Path) -> Guarded:
    """``store`` (just opened, its directory lock held) guarded, and serving queries on loopback."""
    guarded = Guarded(store)
    token = secrets.token_urlsafe(32)
    try:
        guarded.server = QueryServer(guarded, path, token, {"token": token}).start()
    except BaseException:
        store.close()
        raise
    return guarded


class QueryServer:
    """The owner's side: an aiohttp application on 127.0.0.1 (a free port) in a loop thread.

    ``published`` goes into the query file beside the port: the token itself (Qdrant), or what a
    reader needs to derive it from a secret it must already hold (the encrypted index's key).
    """

    def __init__(self, store: VectorStore, path: Path, token: str, published: dict[str, str]) -> None:
        self.store = store
        self.file = path / QUERY_FILE
        self._token = token
        self._published = published
        self._thread: LoopThread | None = None
        self._runner: web.AppRunner | None = None

    def start(self) -> QueryServer:
        self._thread = LoopThread(f"query-server-{self.file.parent.name}").start()
        port = self._thread.run(self._start(), timeout=30)
        body = json.dumps({"pid": os.getpid(), "port": port, **self._published}).encode()
        old = os.umask(0o077)
        try:
            write_atomic(self.file, body)
        finally:
            os.umask(old)
        os.chmod(self.file, 0o600)
        logger.info("store %s serves queries on 127.0.0.1:%d", self.file.parent, port)
        return self

    async def _start(self) -> int:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_post("/call", self._call)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        return int(self._runner.addresses[0][1])

    def stop(self) -> None:
        self.file.unlink(missing_ok=True)
        if self._thread is not None:
            if self._runner is not None:
                self._thread.run(self._runner.cleanup(), timeout=30)
            self._thread.stop()
            self._thread = None

    async def _call(self, request: web.Request) -> web.Response:
        if not secrets.compare_digest(request.headers.get("Authorization", ""), f"Bearer {self._token}"):
            return web.json_response({"error": {"type": "NotAuthorised", "message": "not authorised"}}, status=401)
        try:
            call = await request.json()
            result = await asyncio.to_thread(_answer, self.store, call["op"], call.get("args", {}))
        except VectorStoreError as exc:
            return web.json_response({"error": {"type": type(exc).__name__, "message": str(exc)}}, status=409)
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": {"type": "VectorStoreError", "message": f"bad call: {exc}"}}, status=400)
        return web.json_response({"result": result})


def _answer(store: VectorStore, op: str, a: dict[str, Any]) -> Any:
    """One read, as JSON (a space only where the store has spaces: the Qdrant backends)."""
    space = a.get("space")
    if op == "search":
        vector = np.asarray(a["vector"], dtype=np.float32)
        where = SearchFilter.from_json(a.get("where"))
        if isinstance(store, QdrantStore):
            hits = store.search(a["name"], vector, int(a["limit"]), space=space, where=where)
        else:
            hits = store.search(a["name"], vector, int(a["limit"]), where=where)
        return [[h.id, h.score, h.payload] for h in hits]
    if op == "count":
        if isinstance(store, QdrantStore):
            return store.count(a["name"], space=space, where=SearchFilter.from_json(a.get("where")))
        return store.count(a["name"])
    if op == "dim":
        return store.dim(a["name"])
    if op == "retrieve":
        points = store.retrieve(a["name"], list(a["ids"]), bool(a["with_vectors"]))
        return [[p.id, None if p.vector is None else p.vector.tolist(), p.payload] for p in points]
    if op == "collections":
        return store.collections()
    if op == "load_offsets":
        return [[t, p, o] for (t, p), o in store.load_offsets(a["consumer"]).items()]
    raise ValueError(f"unknown operation {op!r}")


class RemoteReads:
    """The reading side: each call is one HTTP request to the owner's query server."""

    path: Path
    owner: int

    def __init__(self, path: Path, port: int, token: str, owner: int) -> None:
        self.path, self.owner = path, owner
        self._port, self._token = port, token

    def _call(self, op: str, **args: Any) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=CALL_TIMEOUT_S)
        try:
            body = json.dumps({"op": op, "args": args})
            conn.request("POST", "/call", body, {"Authorization": f"Bearer {self._token}"})
            answer = json.loads(conn.getresponse().read())
        except (OSError, ValueError) as exc:
            why = f"store {self.path}: its owner (pid {self.owner}) did not answer: {exc}"
            raise VectorStoreError(why) from None
        finally:
            conn.close()
        if "error" in answer:
            error = answer["error"]
            if error["type"] == "NotAuthorised":
                raise NotAuthorised(
                    f"store {self.path}: its owner (pid {self.owner}) refused this reader's credentials"
                )
            raise _ERRORS.get(error["type"], VectorStoreError)(error["message"])
        return answer["result"]

    def _hits(self, rows: list[Any]) -> list[Hit]:
        return [Hit(i, float(s), p) for i, s, p in rows]

    def dim(self, name: str) -> int | None:
        found = self._call("dim", name=name)
        return None if found is None else int(found)

    def retrieve(self, name: str, ids: list[str], with_vectors: bool = True) -> list[StoredPoint]:
        rows = self._call("retrieve", name=name, ids=ids, with_vectors=with_vectors)
        return [StoredPoint(i, None if v is None else np.asarray(v, np.float32), p) for i, v, p in rows]

    def collections(self) -> list[str]:
        return [str(c) for c in self._call("collections")]

    def load_offsets(self, consumer: str) -> Offsets:
        return {(t, int(p)): int(o) for t, p, o in self._call("load_offsets", consumer=consumer)}

    def ensure_collection(self, name: str, dim: int) -> None:
        self._refuse()

    def upsert(self, name: str, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        self._refuse()

    def delete_collection(self, name: str) -> None:
        self._refuse()

    def save_offsets(self, consumer: str, offsets: Offsets) -> None:
        self._refuse()

    def close(self) -> None:
        """Nothing to release: each call opens and closes its own connection."""

    def _refuse(self) -> None:
        raise VectorStoreError(f"store {self.path} is open in pid {self.owner}: it can be read from here, not written")


class NotAuthorised(VectorStoreError):
    """The owner refused the reader's token."""


def await_query_file(path: Path, grace_s: float = STARTUP_GRACE_S) -> None:
    """Wait up to ``grace_s`` for a starting owner's query file (returns at once when it is there)."""
    deadline = time.monotonic() + grace_s
    while not (path / QUERY_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def read_query_file(path: Path) -> dict[str, Any]:
    """The owner's query file (pid, port and what the token takes); OSError or ValueError when unusable."""
    info = json.loads((path / QUERY_FILE).read_text())
    if not isinstance(info, dict) or not {"pid", "port"} <= info.keys():
        raise ValueError(f"{path / QUERY_FILE}: not a query file")
    return info


class SharedStore(RemoteReads, QdrantStore):
    """Another process's embedded Qdrant store, read through the queries its owner serves."""

    @classmethod
    def connect(cls, path: Path, locked: StoreLockedError) -> SharedStore:
        """The owner's query service, or ``locked`` again when the owner serves none.

        An owner takes the directory lock first and publishes its query file a moment later
        (once its store is open): a reader that finds the lock but no file waits up to
        ``STARTUP_GRACE_S`` for it rather than failing in that gap.
        """
        await_query_file(path)
        try:
            info = read_query_file(path)
            store = cls(path, int(info["port"]), str(info["token"]), int(info["pid"]))
            store.collections()  # one round trip: the owner answers
        except (OSError, ValueError, KeyError, VectorStoreError) as exc:
            logger.debug("no query service for %s: %s", path, exc)
            raise locked from None
        logger.debug("reading vector store %s through its owner, pid %d", path, store.owner)
        return store

    def search(
        self,
        name: str,
        vector: np.ndarray,
        limit: int = 10,
        *,
        space: str | None = None,
        where: SearchFilter | None = None,
    ) -> list[Hit]:
        vector_list = np.asarray(vector, np.float32).tolist()
        return self._hits(
            self._call("search", name=name, vector=vector_list, limit=limit, space=space, where=_wire(where))
        )

    def count(self, name: str, *, space: str | None = None, where: SearchFilter | None = None) -> int:
        return int(self._call("count", name=name, space=space, where=_wire(where)))


def _wire(where: SearchFilter | None) -> dict[str, Any] | None:
    return where.to_json() if where else None

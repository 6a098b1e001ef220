"""Embedded vector store on qdrant-edge-py: Qdrant's storage engine running in this process.

Layout under the store directory (one process at a time, see :mod:`stores.vectorstore.lock`)::

    collections/<name>/    one EdgeShard per collection (its own WAL, segments, edge_config.json)
    offsets/<consumer>.json
    mediavec-store.json    which backend owns the directory
    .mediavec.lock

Durability: ``EdgeShard.update`` appends to the shard's WAL through a memory map, which survives
a crash of this process but is not fsynced; ``flush()`` fsyncs. So :meth:`EdgeStore.upsert`
flushes before it returns (``sync=True``, the default), which makes the points durable against a
power loss too, before the sink records the offsets that cover them.

Every shard keeps keyword indexes on the ``space``, ``media_id`` and ``label`` payload fields
(made with the shard, or on first open of a shard made before them), so a search or count for one
space, medium or label filters through the index instead of scanning payloads.

The HNSW index: qdrant-edge builds none by itself, and its build holds the GIL, so
:mod:`stores.vectorstore.optimizer` rebuilds a collection in a child process on a copy of its
shard once ``optimize_after_points`` new points arrived, and swaps the result in; ingest and
search go on meanwhile (:meth:`EdgeStore.rebuild`). Every shard method runs under
:attr:`EdgeStore.mutex`, which the swap holds.

Offsets live in small JSON files rather than in a shard: they are a handful of integers per
consumer, rewritten after every upsert, and a file written atomically (tmp, fsync, rename, fsync
the directory) costs two fsyncs where a shard flush costs about ten; it is also readable by a
person who wants to know where the sink stands. They sit inside the store directory, so copying
or deleting the store takes its offsets with it.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from stores.vectorstore.base import (
    DimensionMismatchError,
    Hit,
    Offsets,
    QdrantStore,
    StoredPoint,
    UnknownCollectionError,
    VectorStoreError,
    canonical_ids,
    check_batch,
    check_consumer,
    check_name,
    check_offsets,
    check_query,
)
from stores.vectorstore.edge_engine import INDEXED_FIELDS, edge_config, edge_filter, edge_search_params, index_fields
from stores.vectorstore.filters import SearchFilter
from stores.vectorstore.lock import DirLock, fsync_dir, write_atomic
from stores.vectorstore.optimizer import (
    BuildAbandoned,
    BuildReport,
    Optimizer,
    build_in_child,
    copy_for_build,
    copy_points,
    restore_interrupted_swaps,
    swap_dirs,
)

logger = logging.getLogger(__name__)

BACKEND = "edge"
_EDGE_CONFIG = "edge_config.json"  # written by qdrant-edge into every shard directory
OPTIMIZE_AFTER_POINTS, OPTIMIZE_GROWTH = 20_000, 0.1  # the QdrantSettings defaults
SWAP_POINTS = 2048  # a rebuild catches up outside the lock until at most this many points are left


class EdgeStore(QdrantStore):
    """Collections as qdrant-edge shards in one local directory."""

    def __init__(
        self,
        path: Path,
        *,
        sync: bool = True,
        optimize_after_points: int = OPTIMIZE_AFTER_POINTS,
        optimize_growth: float = OPTIMIZE_GROWTH,
        hnsw_ef: int | None = None,
    ) -> None:
        """``optimize_after_points``: rebuild a collection's index after this many new points (0: never),
        and ``optimize_growth`` times its size at the last rebuild (see :class:`Optimizer`).

        ``hnsw_ef``: candidates an HNSW search keeps (None: the engine's default), in
        :attr:`search_params`.
        """
        self.path = Path(path)
        self._sync = sync
        self._lock: DirLock | None = DirLock(self.path, BACKEND)
        self._shards: dict[str, qe.EdgeShard] = {}
        self._dims: dict[str, int] = {}
        self._offsets: dict[str, Offsets] = {}
        self.mutex = threading.RLock()  # every shard call, and a rebuild's copy and swap
        self.search_params = edge_search_params(hnsw_ef)
        self._pending: dict[str, list[str]] = {}  # ids written during a rebuild, per collection
        self._build_lock = threading.Lock()  # one rebuild at a time
        self.optimizer = (
            Optimizer(self.rebuild, optimize_after_points, optimize_growth) if optimize_after_points > 0 else None
        )
        self._collections_dir.mkdir(exist_ok=True)
        self._offsets_dir.mkdir(exist_ok=True)
        _remove_leftovers(self._collections_dir)
        logger.info("opened edge vector store at %s", self.path)

    @property
    def _collections_dir(self) -> Path:
        return self.path / "collections"

    @property
    def _offsets_dir(self) -> Path:
        return self.path / "offsets"

    def ensure_collection(self, name: str, dim: int) -> None:
        shard_dir = self._collections_dir / check_name(name)
        with self.mutex:
            if shard_dir.exists():
                stored = _stored_dim(shard_dir)
                if stored != dim:
                    raise DimensionMismatchError(f"collection {name!r} has dimension {stored}, not {dim}")
                return
            self._create(name, dim)

    def _create(self, name: str, dim: int) -> None:
        # Build the shard under a temporary name and rename it into place, so a crash midway
        # never leaves a half-made collection that later opens look like a real one.
        tmp = self._collections_dir / f".tmp-{name}-{uuid.uuid4().hex}"
        shard = qe.EdgeShard.create(str(tmp), edge_config(dim))
        index_fields(shard, INDEXED_FIELDS)
        shard.flush()
        shard.close()
        tmp.rename(self._collections_dir / name)
        fsync_dir(self._collections_dir)
        logger.info("created edge collection %s (dim %d, cosine, float16)", name, dim)

    def _shard(self, name: str) -> tuple[qe.EdgeShard, int]:
        with self.mutex:
            shard = self._shards.get(name)
            if shard is None:
                shard = self._load(name)
            return shard, self._dims[name]

    def _load(self, name: str) -> qe.EdgeShard:
        shard_dir = self._collections_dir / check_name(name)
        if not shard_dir.exists():
            raise UnknownCollectionError(f"no collection {name!r} in {self.path}")
        dim = self._dims[name] = _stored_dim(shard_dir)
        # Loading with the config writes this version's HNSW and optimizer settings into older shards.
        shard = self._shards[name] = qe.EdgeShard.load(str(shard_dir), edge_config(dim))
        info = shard.info()
        missing = [f for f in INDEXED_FIELDS if f not in info.payload_schema]
        if missing:
            logger.info("indexing the payload fields %s of edge collection %s", missing, name)
            index_fields(shard, missing)
            shard.flush()
        if self.optimizer is not None:
            self.optimizer.note(name, info.points_count - info.indexed_vectors_count, size=info.indexed_vectors_count)
        return shard

    def dim(self, name: str) -> int | None:
        if name in self._dims:
            return self._dims[name]
        shard_dir = self._collections_dir / check_name(name)
        return _stored_dim(shard_dir) if shard_dir.exists() else None

    def upsert(self, name: str, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        dim = self._shard(name)[1]
        rows = check_batch(ids, vectors, payloads, dim).tolist()
        wanted = canonical_ids(ids)
        points = [qe.Point(i, row, p) for i, row, p in zip(wanted, rows, payloads, strict=True)]
        with self.mutex:
            shard, _ = self._shard(name)  # again: a rebuild may have swapped it since
            shard.update(qe.UpdateOperation.upsert_points(points))
            if self._sync:
                shard.flush()
            if name in self._pending:
                self._pending[name] += wanted
        if self.optimizer is not None:
            self.optimizer.note(name, len(points))

    def search(
        self,
        name: str,
        vector: np.ndarray,
        limit: int = 10,
        *,
        space: str | None = None,
        where: SearchFilter | None = None,
    ) -> list[Hit]:
        with self.mutex:  # a rebuild's swap replaces the shard
            shard, dim = self._shard(name)
            request = qe.SearchRequest(
                query=qe.Query.Nearest(check_query(vector, dim)),
                limit=limit,
                filter=edge_filter(space, where),
                params=self.search_params,
                with_payload=True,
                with_vector=False,
            )
            points = shard.search(request)
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in points]

    def count(self, name: str, *, space: str | None = None, where: SearchFilter | None = None) -> int:
        with self.mutex:
            shard, _ = self._shard(name)
            return int(shard.count(qe.CountRequest(exact=True, filter=edge_filter(space, where))))

    def retrieve(self, name: str, ids: list[str], with_vectors: bool = True) -> list[StoredPoint]:
        wanted = canonical_ids(ids)
        asked: list[qe.PointId] = list(wanted)
        with self.mutex:
            shard, _ = self._shard(name)
            found = {str(r.id): r for r in shard.retrieve(asked, with_payload=True, with_vector=with_vectors)}
        return [_stored_point(found[i], with_vectors) for i in wanted if i in found]

    def collections(self) -> list[str]:
        return sorted(p.name for p in self._collections_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def delete_collection(self, name: str) -> None:
        with self.mutex:
            self._delete(name)

    def _delete(self, name: str) -> None:
        shard_dir = self._collections_dir / check_name(name)
        shard = self._shards.pop(name, None)
        self._dims.pop(name, None)
        if self.optimizer is not None:
            self.optimizer.forget(name)
        if shard is not None:
            shard.close()
        if shard_dir.exists():
            trash = self._collections_dir / f".trash-{name}-{uuid.uuid4().hex}"
            shard_dir.rename(trash)  # atomic: the collection is gone even if rmtree is cut short
            fsync_dir(self._collections_dir)
            shutil.rmtree(trash)
            logger.info("deleted edge collection %s", name)

    def load_offsets(self, consumer: str) -> Offsets:
        cached = self._offsets.get(check_consumer(consumer))
        if cached is None:
            cached = self._offsets[consumer] = _read_offsets(self._offsets_dir / f"{consumer}.json")
        return dict(cached)

    def save_offsets(self, consumer: str, offsets: Offsets) -> None:
        merged = {**self.load_offsets(consumer), **check_offsets(offsets)}
        write_atomic(self._offsets_dir / f"{consumer}.json", _offsets_json(consumer, merged))
        self._offsets[consumer] = merged

    def close(self) -> None:
        """Stop a rebuild in progress (the live shards stay as they are), then flush and close."""
        if self.optimizer is not None:
            self.optimizer.stop()
        try:
            with self._build_lock, self.mutex:  # a rebuild called directly finishes or gives up first
                while self._shards:
                    _, shard = self._shards.popitem()
                    shard.flush()
                    shard.close()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None
                logger.info("closed edge vector store at %s", self.path)

    def optimize(self, name: str) -> bool:
        """Merge segments and build the HNSW index now; blocks the caller, not ingest or search."""
        return self.rebuild(name).changed

    def engine_search(self, name: str, request: qe.SearchRequest) -> list[qe.ScoredPoint]:
        """A search in the engine's own terms (its filters and SearchParams): benchmarks and tuning."""
        with self.mutex:
            shard, _ = self._shard(name)
            return shard.search(request)

    def rebuild(self, name: str, stopping: threading.Event | None = None) -> BuildReport:
        """Build ``name``'s index in a child process on a copy, then swap it in (see the module doc).

        Ingest and search go on meanwhile, but for the copy and the swap. Raises
        :class:`~stores.vectorstore.optimizer.BuildAbandoned` when ``stopping`` is set or the
        collection is deleted meanwhile; the live shard is then left as it was.
        """
        stopping = stopping or (self.optimizer.stopping if self.optimizer is not None else threading.Event())
        with self._build_lock:
            report = BuildReport(name)
            build_dir, live = self._copy_for_build(name, report)
            try:
                started = time.perf_counter()
                report.changed = build_in_child(build_dir, stopping)
                report.build_s = time.perf_counter() - started
                old = self._catch_up_and_swap(name, live, build_dir, stopping, report)
                shutil.rmtree(old)
            finally:
                with self.mutex:
                    self._pending.pop(name, None)
                shutil.rmtree(build_dir, ignore_errors=True)  # a build that did not make it
            return report

    def _copy_for_build(self, name: str, report: BuildReport) -> tuple[Path, qe.EdgeShard]:
        with self.mutex:
            started = time.perf_counter()
            live, _ = self._shard(name)
            live.flush()
            build_dir = copy_for_build(self._collections_dir, name)
            self._pending[name] = []
            report.points = live.info().points_count
            report.copy_s = time.perf_counter() - started
        return build_dir, live

    def _catch_up_and_swap(
        self, name: str, live: qe.EdgeShard, build_dir: Path, stopping: threading.Event, report: BuildReport
    ) -> Path:
        """Copy what was written during the build into it, in rounds, then swap; the old directory."""
        built = qe.EdgeShard.load(str(build_dir))
        swapped = False
        try:
            while True:
                if stopping.is_set():
                    raise BuildAbandoned(f"the store is closing: rebuild of {name!r} abandoned")
                with self.mutex:
                    self._check_live(name, live)
                    ids, self._pending[name] = self._pending[name], []
                    if len(ids) <= SWAP_POINTS:
                        report.caught_up += copy_points(live, built, ids)
                        swapped = True  # _swap closes built, whatever happens in it
                        return self._swap(name, built, build_dir, report)
                try:
                    report.caught_up += copy_points(live, built, ids)
                except Exception:
                    self._check_live(name, live)  # deleted meanwhile (and live closed)?
                    raise
        finally:
            if not swapped:
                built.close()

    def _check_live(self, name: str, live: qe.EdgeShard) -> None:
        if self._shards.get(name) is not live:
            raise BuildAbandoned(f"collection {name!r} was deleted during its rebuild")

    def _swap(self, name: str, built: qe.EdgeShard, build_dir: Path, report: BuildReport) -> Path:
        """Holding the mutex: the built shard replaces the live one; returns where the old one went."""
        started = time.perf_counter()
        try:
            info = built.info()
            report.segments, report.indexed = info.segments_count, info.indexed_vectors_count
            built.flush()
        finally:
            built.close()
        live = self._shards.pop(name)
        live.flush()
        live.close()
        old = swap_dirs(self._collections_dir, name, build_dir)
        self._shards[name] = qe.EdgeShard.load(str(self._collections_dir / name))
        report.swap_s = time.perf_counter() - started
        return old


def _stored_dim(shard_dir: Path) -> int:
    """Dimension of an existing shard, read from the config qdrant-edge persists beside it."""
    try:
        params = json.loads((shard_dir / _EDGE_CONFIG).read_text())["vectors"][""]
    except (OSError, ValueError, KeyError) as exc:
        raise VectorStoreError(f"{shard_dir} is not a readable edge shard: {exc}") from exc
    if params.get("distance") != "Cosine":
        raise DimensionMismatchError(f"{shard_dir} uses {params.get('distance')} distance, not Cosine")
    return int(params["size"])


def _stored_point(record: Any, with_vectors: bool) -> StoredPoint:
    vector = np.asarray(record.vector, dtype=np.float32) if with_vectors and record.vector is not None else None
    return StoredPoint(str(record.id), vector, dict(record.payload or {}))


def _remove_leftovers(collections_dir: Path) -> None:
    restore_interrupted_swaps(collections_dir)
    for entry in collections_dir.iterdir():
        if entry.name.startswith((".tmp-", ".trash-", ".build-", ".old-")):
            logger.warning("removing %s left by an interrupted create, delete or index rebuild", entry)
            shutil.rmtree(entry, ignore_errors=True)


def _offsets_json(consumer: str, offsets: Offsets) -> bytes:
    rows = [{"topic": t, "partition": p, "offset": o} for (t, p), o in sorted(offsets.items())]
    return json.dumps({"consumer": consumer, "offsets": rows}, indent=1).encode()


def _read_offsets(path: Path) -> Offsets:
    if not path.exists():
        return {}
    rows = json.loads(path.read_text())["offsets"]
    return {(str(r["topic"]), int(r["partition"])): int(r["offset"]) for r in rows}

"""Background HNSW builds for the embedded edge store, so that search stops scanning while ingest goes on.

qdrant-edge runs no optimizer of its own: ``EdgeShard.optimize()`` merges segments and builds the
HNSW index when asked, and blocks. It also holds the GIL for the whole build (measured with
qdrant-edge-py 0.9.0: a 30k-point 256-d build stopped every other thread of the process for its
4 s; 1M points take minutes), as do ``update``, ``search`` and ``flush``, so a build in a thread
beside the sink would stop ingest and the query server with it. The build therefore runs in a
child process, on a copy of the shard:

1. copy: the owner flushes the shard and copies its directory, holding the store's lock (a file
   copy: 0.3 s for 1M 256-d points here), and from then on notes the ids of the points it writes;
2. build: a child process (``python -m stores.vectorstore.optimizer <dir>``, at low CPU priority)
   loads the copy, runs ``optimize()`` and closes it; the owner ingests and answers meanwhile;
3. catch up: the owner copies the points written since step 1 into the built shard, in rounds,
   outside the lock while many are left;
4. swap: holding the lock, the last few points, then the built directory replaces the live one
   (the old one is renamed aside first, so a crash at any point leaves a whole collection); 1.2 s
   at 1M points, most of it loading the new shard.

:class:`Optimizer` is the scheduler: a daemon thread that starts a rebuild of a collection once
enough points arrived since its last one (``after_points``, and ``growth`` times the collection's
size then, since every rebuild copies the whole shard), one rebuild at a time, and logs and
retries a failed one rather than letting it end the process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stores.vectorstore.base import UnknownCollectionError
from stores.vectorstore.lock import fsync_dir

logger = logging.getLogger(__name__)

RETRY_S = 60.0  # wait after a failed rebuild before the next try of the same collection
COPY_CHUNK = 1024  # points per retrieve/upsert while catching up
_OLD = ".old-"  # prefix of a live shard directory moved aside by a swap


class BuildAbandoned(Exception):
    """The store is closing or the collection went away: the rebuild gave up, the live shard is as it was."""


@dataclass
class BuildReport:
    """What one rebuild did, for the log and for callers of ``EdgeStore.optimize``."""

    name: str
    points: int = 0
    changed: bool = False
    copy_s: float = 0.0
    build_s: float = 0.0
    caught_up: int = 0
    swap_s: float = 0.0
    segments: int = 0
    indexed: int = 0


class Optimizer:
    """A daemon thread that rebuilds a collection's index once enough new points arrived.

    ``rebuild(name, stopping)`` does the work (``EdgeStore.rebuild``); the optimizer only decides
    when, one collection at a time, and keeps going whatever a rebuild raises.
    """

    def __init__(
        self,
        rebuild: Callable[[str, threading.Event], BuildReport],
        after_points: int,
        growth: float = 0.0,
        retry_s: float = RETRY_S,
    ) -> None:
        if after_points <= 0:
            raise ValueError("after_points must be positive (0 means no optimizer at all)")
        self._rebuild = rebuild
        self.after_points = after_points
        self.growth = growth
        self._retry_s = retry_s
        self._grown: dict[str, int] = {}
        self._size: dict[str, int] = {}  # points at the last rebuild (or when first opened)
        self._not_before: dict[str, float] = {}
        self._cond = threading.Condition()
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.builds = 0  # finished rebuilds, for tests and the log

    def note(self, name: str, points: int, *, size: int | None = None) -> None:
        """``points`` more points were written to ``name`` (of ``size`` in all, when known).

        Starts the thread on first use.
        """
        with self._cond:
            self._grown[name] = self._grown.get(name, 0) + points
            if size is not None:
                self._size[name] = size
            if self._thread is None and not self.stopping.is_set():
                self._thread = threading.Thread(target=self._run, name="edge-optimizer", daemon=True)
                self._thread.start()
            if self._grown[name] >= self.threshold(name):
                self._cond.notify()

    def threshold(self, name: str) -> float:
        """New points that make ``name`` due for a rebuild."""
        return max(self.after_points, self.growth * self._size.get(name, 0))

    def forget(self, name: str) -> None:
        """The collection is gone (deleted): nothing to build."""
        with self._cond:
            self._grown.pop(name, None)
            self._size.pop(name, None)
            self._not_before.pop(name, None)

    def stop(self, timeout: float = 60.0) -> None:
        """Ask a rebuild in progress to give up (its child is terminated) and wait for the thread."""
        self.stopping.set()
        with self._cond:
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("edge optimizer did not stop within %.0f s", timeout)

    def _due(self) -> str | None:
        now = time.monotonic()
        for name, grown in self._grown.items():
            if grown >= self.threshold(name) and self._not_before.get(name, 0.0) <= now:
                return name
        return None

    def _run(self) -> None:
        while not self.stopping.is_set():
            with self._cond:
                name = self._due()
                if name is None:
                    self._cond.wait(timeout=min(self._retry_s, 5.0))
                    continue
                grown, self._grown[name] = self._grown[name], 0
            self._build(name, grown)

    def _build(self, name: str, grown: int) -> None:
        logger.info("edge optimizer: rebuilding the index of %s (%d points written since the last)", name, grown)
        try:
            report = self._rebuild(name, self.stopping)
        except (BuildAbandoned, UnknownCollectionError) as exc:
            logger.info("edge optimizer: %s", exc)
        except Exception:
            logger.exception("edge optimizer: rebuild of %s failed; retrying in %.0f s", name, self._retry_s)
            with self._cond:
                self._grown[name] = self._grown.get(name, 0) + grown
                self._not_before[name] = time.monotonic() + self._retry_s
        else:
            with self._cond:
                self._size[name] = report.points
            self.builds += 1
            logger.info(
                "edge optimizer: %s rebuilt: %d points, %d indexed in %d segments; copy %.1f s, build %.1f s, "
                "%d points caught up, swap %.2f s",
                name,
                report.points,
                report.indexed,
                report.segments,
                report.copy_s,
                report.build_s,
                report.caught_up,
                report.swap_s,
            )


def build_in_child(shard_dir: Path, stopping: threading.Event) -> bool:
    """Optimise the shard at ``shard_dir`` in a child process; True if the engine changed anything.

    The child runs at low CPU priority so that the owner's ingest and queries come first; it is
    terminated when ``stopping`` is set (the store is closing), which raises :class:`BuildAbandoned`.
    """
    command = [sys.executable, "-m", "stores.vectorstore.optimizer", str(shard_dir)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while True:
        try:
            out, err = proc.communicate(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            if stopping.is_set():
                proc.terminate()
                proc.communicate()
                raise BuildAbandoned(f"the store is closing: build of {shard_dir} stopped") from None
    if proc.returncode != 0:
        reason = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise RuntimeError(f"index build of {shard_dir} failed: {reason[0]}")
    return bool(json.loads(out)["changed"])


def copy_points(src: Any, dst: Any, ids: Iterable[str]) -> int:
    """Copy the points ``ids`` (vectors and payloads, as ``src`` holds them now) from shard src to dst."""
    import qdrant_edge as qe

    wanted = list(dict.fromkeys(ids))
    copied = 0
    for lo in range(0, len(wanted), COPY_CHUNK):
        asked: list[Any] = wanted[lo : lo + COPY_CHUNK]
        records = src.retrieve(asked, with_payload=True, with_vector=True)
        points = [qe.Point(r.id, r.vector, r.payload) for r in records]
        if points:
            dst.update(qe.UpdateOperation.upsert_points(points))
        copied += len(points)
    return copied


def copy_for_build(collections_dir: Path, name: str) -> Path:
    """A copy of the (flushed, unchanging) shard directory of ``name`` to build in."""
    build_dir = collections_dir / f".build-{name}-{uuid.uuid4().hex}"
    shutil.copytree(collections_dir / name, build_dir)
    return build_dir


def swap_dirs(collections_dir: Path, name: str, build_dir: Path) -> Path:
    """Put the (closed) built shard in the place of the (closed) live one; where the old one went.

    The old directory is renamed aside first, so a crash before the fsync leaves it there, whole,
    for :func:`restore_interrupted_swaps`.
    """
    shard_dir = collections_dir / name
    old = collections_dir / f"{_OLD}{name}-{uuid.uuid4().hex}"
    shard_dir.rename(old)
    build_dir.rename(shard_dir)
    fsync_dir(collections_dir)
    return old


def restore_interrupted_swaps(collections_dir: Path) -> None:
    """Put back an old shard that a crash between the two renames of :func:`swap_dirs` left aside."""
    for entry in sorted(collections_dir.glob(f"{_OLD}*")):
        name = entry.name[len(_OLD) : -33]  # less "-" and the 32 hex digits
        if not (collections_dir / name).exists():
            logger.warning("restoring %s, moved aside by an interrupted index rebuild", entry)
            entry.rename(collections_dir / name)
            fsync_dir(collections_dir)


def main(argv: list[str] | None = None) -> int:
    """The child: optimise one shard directory in place and print what changed, as JSON."""
    import qdrant_edge as qe

    (path,) = argv if argv is not None else sys.argv[1:]
    os.nice(10)  # the owner's ingest and queries come first
    shard = qe.EdgeShard.load(path)
    try:
        changed = bool(shard.optimize())
        shard.flush()
        info = shard.info()
    finally:
        shard.close()
    print(json.dumps({"changed": changed, "segments": info.segments_count, "indexed": info.indexed_vectors_count}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

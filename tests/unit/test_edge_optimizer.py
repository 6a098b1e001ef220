"""The edge store's HNSW rebuild: built in a child process while ingest and search go on.

Real qdrant-edge shards and a real child process throughout. The collections hold 24,000 256-d
points so that the engine really builds HNSW (a segment is indexed once it passes 10 MB of
vectors, 20,000 of these).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe

import stores.vectorstore.edge as edge
from stores.vectorstore.edge import EdgeStore
from stores.vectorstore.optimizer import BuildReport, Optimizer

DIM = 256
N = 24_000
WAIT_S = 120.0  # a deadline for waiting on a background build, not a timing assertion


def _vectors(n: int, seed: int) -> np.ndarray:
    """Clustered unit vectors (200 gaussian clusters), as embeddings of similar frames are."""
    centres = np.random.default_rng(0).standard_normal((200, DIM)).astype(np.float32) / 16  # the same each call
    rng = np.random.default_rng(seed)
    v = centres[rng.integers(0, 200, n)] + rng.standard_normal((n, DIM)).astype(np.float32) * 0.05
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _fill(store: EdgeStore, vectors: np.ndarray, batch: int = 4096) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(len(vectors))]
    for lo in range(0, len(vectors), batch):
        payloads = [{"space": "scene", "media_id": f"m{i // 64}"} for i in range(lo, min(lo + batch, len(vectors)))]
        store.upsert("c", ids[lo : lo + batch], vectors[lo : lo + batch], payloads)
    return ids


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[tuple[EdgeStore, list[str], np.ndarray]]:
    store = EdgeStore(tmp_path / "s", optimize_after_points=0, hnsw_ef=128)
    store.ensure_collection("c", DIM)
    vectors = _vectors(N, seed=1)
    ids = _fill(store, vectors)
    yield store, ids, vectors
    store.close()


class _Gate:
    """Wraps the real child build: the test acts between the copy and the build, then lets it run."""

    def __init__(self) -> None:
        self.reached, self.go = threading.Event(), threading.Event()
        self.real = edge.build_in_child

    def __call__(self, shard_dir: Path, stopping: threading.Event) -> bool:
        self.reached.set()
        assert self.go.wait(WAIT_S)
        return self.real(shard_dir, stopping)


def _top_id(store: EdgeStore, vector: np.ndarray) -> str:
    return store.search("c", vector, 1)[0].id


def test_ingest_and_search_go_on_while_the_index_builds(
    filled: tuple[EdgeStore, list[str], np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ids, vectors = filled
    gate = _Gate()
    monkeypatch.setattr(edge, "build_in_child", gate)
    reports: list[BuildReport] = []
    builder = threading.Thread(target=lambda: reports.append(store.rebuild("c")))
    builder.start()
    assert gate.reached.wait(WAIT_S)
    written: dict[str, np.ndarray] = {}

    def write_and_read(seed: int) -> None:
        new = _vectors(64, seed=seed)
        new_ids = [str(uuid.uuid4()) for _ in range(64)]
        store.upsert("c", new_ids, new, [{"space": "scene", "media_id": f"new{seed}"}] * 64)
        written.update(zip(new_ids, new, strict=True))
        assert _top_id(store, new[5]) == new_ids[5]  # a point written during the build is found
        assert _top_id(store, vectors[seed]) == ids[seed]  # and the old ones still are

    # From another thread than the builder: while the copy waits for its build, then while it builds.
    for seed in range(100, 110):
        write_and_read(seed)
    gate.go.set()
    seed = 110
    while builder.is_alive():
        write_and_read(seed)
        seed += 1
    builder.join()

    report = reports[0]
    assert report.points == N and report.caught_up >= 640
    assert report.indexed >= 20_000  # HNSW really built
    assert store.count("c") == N + len(written)
    for i in list(written)[::64]:
        assert _top_id(store, written[i]) == i
    assert not list((store.path / "collections").glob(".*"))  # no copy or old shard left behind


def _recall_at_10(store: EdgeStore, vectors: np.ndarray, ids: list[str], queries: np.ndarray) -> float:
    stored = vectors.astype(np.float16).astype(np.float32)  # as the store keeps them
    found = 0
    for q in queries:
        truth = {ids[i] for i in np.argsort(-(stored @ q))[:10]}
        found += len(truth & {h.id for h in store.search("c", q, 10)})
    return found / (10 * len(queries))


def test_search_after_the_rebuild_finds_what_exact_search_finds(
    filled: tuple[EdgeStore, list[str], np.ndarray],
) -> None:
    store, ids, vectors = filled
    queries = _vectors(50, seed=7)
    assert _recall_at_10(store, vectors, ids, queries) == 1.0  # before: a scan, exact
    assert store.optimize("c")
    assert store.engine_search("c", qe.SearchRequest(query=qe.Query.Nearest(queries[0].tolist()), limit=1))
    assert _recall_at_10(store, vectors, ids, queries) >= 0.95
    info = store._shard("c")[0].info()
    assert info.points_count == N and info.indexed_vectors_count >= 20_000


def test_close_during_a_background_build_leaves_the_store_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    started = threading.Event()
    real = edge.build_in_child

    def build(shard_dir: Path, stopping: threading.Event) -> bool:
        started.set()
        assert stopping.wait(WAIT_S)  # close() has begun: the real child starts now and is stopped
        return real(shard_dir, stopping)

    monkeypatch.setattr(edge, "build_in_child", build)
    store = EdgeStore(tmp_path / "s", optimize_after_points=20_000)
    store.ensure_collection("c", DIM)
    vectors = _vectors(N, seed=2)
    ids = _fill(store, vectors)  # the optimizer's thread starts a rebuild after 20,000 points
    assert started.wait(WAIT_S)
    with caplog.at_level("INFO"):
        store.close()
    assert store.optimizer is not None and store.optimizer.builds == 0
    assert "the store is closing" in caplog.text
    assert not list((tmp_path / "s" / "collections").glob(".*"))
    with EdgeStore(tmp_path / "s", optimize_after_points=0) as reopened:
        assert reopened.count("c") == N
        assert _top_id(reopened, vectors[123]) == ids[123]


def test_an_interrupted_swap_puts_the_old_shard_back(tmp_path: Path) -> None:
    with EdgeStore(tmp_path / "s", optimize_after_points=0) as store:
        store.ensure_collection("c", DIM)
        ids = _fill(store, _vectors(100, seed=3))
    collections = tmp_path / "s" / "collections"
    (collections / "c").rename(collections / f".old-c-{uuid.uuid4().hex}")  # crash between the renames
    with EdgeStore(tmp_path / "s") as store:
        assert store.count("c") == 100 and store.retrieve("c", ids[:1])[0].id == ids[0]
    assert [p.name for p in collections.iterdir()] == ["c"]


def test_a_failed_rebuild_is_logged_and_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def rebuild(name: str, stopping: threading.Event) -> BuildReport:
        calls.append(name)
        if len(calls) == 1:
            raise RuntimeError("disk full")
        return BuildReport(name, points=5)

    optimizer = Optimizer(rebuild, after_points=3, retry_s=0.05)
    optimizer.note("c", 2)
    optimizer.note("d", 1)  # below the threshold: never built
    optimizer.note("c", 1)
    deadline = time.monotonic() + WAIT_S
    while optimizer.builds < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    optimizer.stop()
    assert calls == ["c", "c"] and optimizer.builds == 1
    assert "rebuild of c failed" in caplog.text and "disk full" in caplog.text


def test_a_large_collection_waits_for_proportional_growth() -> None:
    optimizer = Optimizer(lambda n, s: BuildReport(n), after_points=100, growth=0.1)
    optimizer.note("c", 50, size=10_000)
    assert optimizer.threshold("c") == 1000 and optimizer.threshold("new") == 100
    optimizer.stop()


def test_the_child_refuses_a_directory_that_is_no_shard(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="index build of"):
        edge.build_in_child(tmp_path, threading.Event())

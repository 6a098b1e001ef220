"""The embedded vector store backends, each run through the same contract tests.

"local" is qdrant-client's local mode, which exercises ServerStore's code through the same client
API a Qdrant server uses (no server binary can run here).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from consumers.sink_qdrant.transform import points_from_batches
from mediavec.settings import Settings
from schemas.ids import point_id
from schemas.models import VectorBatch, VectorRow
from stores.settings import QdrantSettings
from stores.vectorstore import (
    DimensionMismatchError,
    StoreLockedError,
    UnknownCollectionError,
    VectorStore,
    VectorStoreError,
    open_store,
)
from stores.vectorstore.edge import EdgeStore
from stores.vectorstore.server import ServerStore
from stores.vectorstore.shared import Guarded

DIM = 16
FP16_TOL = 2e-3  # a unit vector's components rounded to fp16 (and normalised again)

BACKENDS: dict[str, Callable[[Path], VectorStore]] = {"edge": EdgeStore, "local": ServerStore.local}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def opener(backend: str) -> Callable[[Path], VectorStore]:
    return BACKENDS[backend]


@pytest.fixture
def store(opener: Callable[[Path], VectorStore], tmp_path: Path) -> Iterator[VectorStore]:
    with opener(tmp_path / "store") as s:
        yield s


def vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float16)


def ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def payloads(n: int, tag: str = "a") -> list[dict[str, object]]:
    return [{"media_id": f"m{i}", "frame_index": i, "tag": tag, "label": None, "meta": {"k": "v"}} for i in range(n)]


def normalised(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_upsert_count_retrieve_round_trip(store: VectorStore) -> None:
    store.ensure_collection("c", DIM)
    pid, vec, pay = ids(20), vectors(20), payloads(20)
    store.upsert("c", pid, vec, pay)
    assert store.count("c") == 20
    missing = str(uuid.uuid4())
    got = store.retrieve("c", [pid[7], missing, pid[3]])
    assert [p.id for p in got] == [pid[7], pid[3]]
    assert got[0].payload == pay[7] and got[1].payload == pay[3]
    for point, want in zip(got, normalised(vec[[7, 3]]), strict=True):
        assert point.vector is not None
        np.testing.assert_allclose(point.vector, want, atol=FP16_TOL)
    assert store.retrieve("c", [pid[0]], with_vectors=False)[0].vector is None


def test_search_ranks_the_exact_vector_first(store: VectorStore) -> None:
    store.ensure_collection("c", DIM)
    pid, vec = ids(50), vectors(50, seed=1)
    store.upsert("c", pid, vec, payloads(50))
    hits = store.search("c", vec[17], limit=5)
    assert len(hits) == 5
    assert hits[0].id == pid[17]
    assert hits[0].score == pytest.approx(1.0, abs=FP16_TOL)
    assert hits[0].payload["frame_index"] == 17
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[1].score < 0.99


def test_upserting_the_same_ids_twice_overwrites(store: VectorStore) -> None:
    store.ensure_collection("c", DIM)
    pid = ids(10)
    store.upsert("c", pid, vectors(10, seed=2), payloads(10, tag="first"))
    store.upsert("c", pid, vectors(10, seed=3), payloads(10, tag="second"))
    assert store.count("c") == 10
    [point] = store.retrieve("c", [pid[4]])
    assert point.payload["tag"] == "second"
    assert point.vector is not None
    np.testing.assert_allclose(point.vector, normalised(vectors(10, seed=3)[4]), atol=FP16_TOL)


def test_offsets_save_merge_and_load(store: VectorStore) -> None:
    assert store.load_offsets("sink") == {}
    store.save_offsets("sink", {("vectors", 0): 5, ("vectors", 1): 7})
    store.save_offsets("sink", {("vectors", 0): 9})
    assert store.load_offsets("sink") == {("vectors", 0): 9, ("vectors", 1): 7}
    assert store.load_offsets("other-sink") == {}


def test_reopen_after_close_keeps_points_and_offsets(opener: Callable[[Path], VectorStore], tmp_path: Path) -> None:
    pid, vec = ids(12), vectors(12, seed=4)
    with opener(tmp_path / "s") as first:
        first.ensure_collection("c", DIM)
        first.upsert("c", pid, vec, payloads(12))
        first.save_offsets("sink", {("vectors", 3): 12})
    with opener(tmp_path / "s") as second:
        assert second.collections() == ["c"]
        assert second.count("c") == 12
        assert second.search("c", vec[5], limit=1)[0].id == pid[5]
        assert second.load_offsets("sink") == {("vectors", 3): 12}
        second.ensure_collection("c", DIM)  # idempotent on an existing collection
        assert second.count("c") == 12


_CRASHING_WRITER = """
    import os, sys, uuid
    from pathlib import Path
    import numpy as np
    from stores.vectorstore.edge import EdgeStore
    from stores.vectorstore.server import ServerStore
    opener = {"edge": EdgeStore, "local": ServerStore.local}[sys.argv[1]]
    store = opener(Path(sys.argv[2]))
    store.ensure_collection("c", 16)
    vectors = np.random.default_rng(5).standard_normal((30, 16)).astype(np.float16)
    ids = [str(uuid.uuid5(uuid.NAMESPACE_DNS, str(i))) for i in range(30)]
    store.upsert("c", ids, vectors, [{"i": i} for i in range(30)])
    store.save_offsets("sink", {("vectors", 0): 30})
    os._exit(0)  # no close, no flush at exit: only what upsert/save_offsets made durable remains
"""


def test_a_process_that_dies_without_closing_keeps_points_and_offsets(
    backend: str, opener: Callable[[Path], VectorStore], tmp_path: Path
) -> None:
    path = tmp_path / "crash"
    script = textwrap.dedent(_CRASHING_WRITER)
    subprocess.run([sys.executable, "-c", script, backend, str(path)], check=True, timeout=120)
    with opener(path) as store:
        assert store.count("c") == 30
        assert store.load_offsets("sink") == {("vectors", 0): 30}
        [point] = store.retrieve("c", [str(uuid.uuid5(uuid.NAMESPACE_DNS, "29"))])
        assert point.payload == {"i": 29}


def test_a_second_opener_is_refused_until_the_first_closes(
    opener: Callable[[Path], VectorStore], tmp_path: Path
) -> None:
    first = opener(tmp_path / "s")
    with pytest.raises(StoreLockedError, match="already open"):
        opener(tmp_path / "s")
    first.close()
    with opener(tmp_path / "s") as again:
        assert again.collections() == []


def test_dimension_mismatch_is_a_clear_error(store: VectorStore) -> None:
    store.ensure_collection("c", DIM)
    with pytest.raises(DimensionMismatchError, match="dimension 16, not 32"):
        store.ensure_collection("c", 32)
    with pytest.raises(DimensionMismatchError):
        store.upsert("c", ids(2), vectors(2, dim=32), payloads(2))
    with pytest.raises(DimensionMismatchError):
        store.search("c", vectors(1, dim=8)[0])
    assert store.count("c") == 0


def test_bad_input_is_refused(store: VectorStore) -> None:
    store.ensure_collection("c", DIM)
    with pytest.raises(VectorStoreError, match="UUID"):
        store.upsert("c", ["not-a-uuid"], vectors(1), payloads(1))
    with pytest.raises(VectorStoreError, match="2 ids, 3 vectors"):
        store.upsert("c", ids(2), vectors(3), payloads(3))
    with pytest.raises(VectorStoreError, match="invalid collection name"):
        store.ensure_collection("../escape", DIM)
    with pytest.raises(UnknownCollectionError):
        store.count("missing")
    assert store.count("c") == 0


def test_delete_collection(store: VectorStore) -> None:
    store.ensure_collection("a", DIM)
    store.ensure_collection("b", 8)
    store.save_offsets("sink", {("vectors", 0): 1})
    assert store.collections() == ["a", "b"]
    store.delete_collection("a")
    store.delete_collection("a")  # already gone: no error
    assert store.collections() == ["b"]
    with pytest.raises(UnknownCollectionError):
        store.count("a")
    store.ensure_collection("a", 32)  # the name is free again, with any dimension
    assert store.count("a") == 0


def test_a_directory_keeps_the_backend_that_made_it(tmp_path: Path) -> None:
    EdgeStore(tmp_path / "s").close()
    with pytest.raises(VectorStoreError, match="holds a 'edge' store"):
        ServerStore.local(tmp_path / "s")
    with EdgeStore(tmp_path / "s") as store:  # the refused opener released its lock
        assert store.collections() == []


def test_sink_transform_output_upserts_and_replays_as_overwrites(store: VectorStore) -> None:
    rows = tuple(VectorRow(point_id("m", "media-1", f, "scene"), "scene", "media-1", f, f / 2) for f in range(6))
    batch = VectorBatch(model="m", vectors=vectors(6), rows=rows, source_url="http://127.0.0.1/a.mp4", collection="x")
    for _ in range(2):  # the replay after a crash between upsert and save_offsets
        for group in points_from_batches([batch]).values():
            store.ensure_collection(group.name, group.dim)
            store.upsert(group.name, group.ids, group.vectors, group.payloads)
    [name] = store.collections()
    assert store.count(name) == 6
    assert store.search(name, vectors(6)[2], limit=1)[0].payload["frame_index"] == 2


def test_open_store_picks_the_backend_from_settings(tmp_path: Path) -> None:
    edge = Settings(data_dir=tmp_path / "d1")
    with open_store(edge) as store:  # an embedded store: guarded, and serving other processes' queries
        assert isinstance(store, Guarded) and isinstance(store.inner, EdgeStore)
        assert store.inner.path == tmp_path / "d1" / "qdrant"
    local = Settings(data_dir=tmp_path, qdrant=QdrantSettings(path=tmp_path / "q", backend="local"))
    with open_store(local) as store:
        assert isinstance(store, Guarded) and isinstance(store.inner, ServerStore)
        store.ensure_collection("c", DIM)
    assert (tmp_path / "q" / "collection" / "c").is_dir()  # qdrant-client local mode's layout


@pytest.mark.filterwarnings("ignore::UserWarning")  # qdrant-client: insecure api key, no server version
def test_the_server_api_key_is_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cret-api-key-do-not-log"
    # Loopback only, and nothing is called on the store, so no request is made.
    settings = Settings(
        data_dir=tmp_path, qdrant=QdrantSettings(url=f"http://user:{secret}@127.0.0.1:6333/", api_key=secret)
    )
    with caplog.at_level(logging.DEBUG), open_store(settings) as store:
        assert isinstance(store, ServerStore)
    assert "127.0.0.1:6333" in caplog.text
    assert secret not in caplog.text

"""Vector spaces in one collection: the space filter, per-space counts, dimensions, query truncation.

Both embedded backends run every test ("local" is qdrant-client's local mode, ServerStore's code
path); the encrypted index keeps one collection per space and shares only the query fitting.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe

from schemas.spaces import ALL_SPACES
from stores.vectorstore import (
    DimensionMismatchError,
    QdrantStore,
    UnknownCollectionError,
    VectorStoreError,
)
from stores.vectorstore.base import fit_query
from stores.vectorstore.edge import EdgeStore
from stores.vectorstore.server import ServerStore

FP16_TOL = 2e-3
BACKENDS: dict[str, Callable[[Path], QdrantStore]] = {"edge": EdgeStore, "local": ServerStore.local}
# Rows of one frame as the embed stage writes them into the vision model's collection.
LAYOUT = {"scene": 3, "object": 5, "text": 4}


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QdrantStore]:
    with BACKENDS[request.param](tmp_path / "store") as s:
        yield s


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def fill(store: QdrantStore, name: str, dim: int = 16) -> dict[str, list[str]]:
    """LAYOUT's rows with random unit vectors; returns the ids of each space."""
    store.ensure_collection(name, dim)
    ids: dict[str, list[str]] = {}
    for seed, (space, n) in enumerate(LAYOUT.items()):
        ids[space] = [str(uuid.uuid4()) for _ in range(n)]
        payloads = [{"space": space, "media_id": f"m{i}", "frame_index": i} for i in range(n)]
        store.upsert(name, ids[space], unit(n, dim, seed).astype(np.float16), payloads)
    return ids


def test_a_space_filter_returns_only_that_space(store: QdrantStore) -> None:
    ids = fill(store, "c")
    scene_vector = unit(LAYOUT["scene"], 16, 0)[1]
    unfiltered = store.search("c", scene_vector, limit=50)
    assert {h.payload["space"] for h in unfiltered} == set(LAYOUT)
    assert len(unfiltered) == sum(LAYOUT.values())
    for space, n in LAYOUT.items():
        hits = store.search("c", scene_vector, limit=50, space=space)
        assert sorted(h.id for h in hits) == sorted(ids[space])
        assert len(hits) == n and {h.payload["space"] for h in hits} == {space}
    best = store.search("c", scene_vector, limit=1, space="scene")[0]
    assert best.id == ids["scene"][1] and best.score == pytest.approx(1.0, abs=FP16_TOL)
    assert store.search("c", scene_vector, limit=5, space="face") == []


def test_counts_and_spaces_per_collection(store: QdrantStore) -> None:
    fill(store, "c")
    store.ensure_collection("empty", 8)
    assert store.count("c") == sum(LAYOUT.values())
    per_space = {s: store.count("c", space=s) for s in ALL_SPACES}
    assert per_space == {"scene": 3, "object": 5, "grid": 0, "text": 4, "face": 0}
    assert store.spaces("c") == LAYOUT
    assert store.spaces("empty") == {}


def test_dim_is_the_stored_dimension_or_none(store: QdrantStore) -> None:
    store.ensure_collection("a", 256)
    store.ensure_collection("b", 128)
    assert (store.dim("a"), store.dim("b"), store.dim("missing")) == (256, 128, None)
    store.delete_collection("a")
    assert store.dim("a") is None


def test_a_wider_query_is_truncated_and_renormalised_to_the_collection(store: QdrantStore) -> None:
    """A 512-d query against 256-d vectors stored the way the embed stage cuts them."""
    full = unit(20, 512, 7)
    stored = full[:, :256] / np.linalg.norm(full[:, :256], axis=1, keepdims=True)
    ids = [str(uuid.uuid4()) for _ in range(20)]
    store.ensure_collection("wide", 256)
    store.upsert("wide", ids, stored.astype(np.float16), [{"space": "scene", "i": i} for i in range(20)])
    for i in (0, 11, 19):
        [hit] = store.search("wide", full[i], limit=1, space="scene")
        assert hit.id == ids[i] and hit.score == pytest.approx(1.0, abs=FP16_TOL)
    with pytest.raises(DimensionMismatchError, match="query has 128 dimensions, the collection has 256"):
        store.search("wide", full[0, :128], limit=1)


def test_fit_query_cuts_renormalises_and_refuses_what_cannot_fit() -> None:
    query = np.arange(1, 9, dtype=np.float16)
    fitted = fit_query(query, 4)
    np.testing.assert_allclose(fitted, np.array([1, 2, 3, 4]) / np.sqrt(30), rtol=1e-6)
    assert fitted.dtype == np.float32 and fitted.shape == (4,)
    np.testing.assert_array_equal(fit_query(query, 8), query.astype(np.float32))  # same width: untouched
    with pytest.raises(DimensionMismatchError):
        fit_query(query, 9)
    with pytest.raises(VectorStoreError, match="NaN"):
        fit_query(np.array([np.nan, 1, 2], dtype=np.float32), 2)


def test_unknown_spaces_and_collections_are_errors(store: QdrantStore) -> None:
    fill(store, "c")
    with pytest.raises(VectorStoreError, match="unknown vector space 'faces'"):
        store.search("c", unit(1, 16, 0)[0], space="faces")
    with pytest.raises(VectorStoreError, match="unknown vector space"):
        store.count("c", space="")
    with pytest.raises(UnknownCollectionError):
        store.search("missing", unit(1, 16, 0)[0], space="scene")


def test_reopened_store_keeps_filtering(tmp_path: Path) -> None:
    for opener in BACKENDS.values():
        path = tmp_path / opener.__name__
        with opener(path) as first:
            ids = fill(first, "c")
        with opener(path) as second:
            hits = second.search("c", unit(5, 16, 1)[2], limit=2, space="object")
            assert hits[0].id == ids["object"][2] and {h.payload["space"] for h in hits} == {"object"}


def test_edge_indexes_space_on_new_shards_and_on_shards_made_without_the_index(tmp_path: Path) -> None:
    with EdgeStore(tmp_path / "s") as store:
        store.ensure_collection("new", 8)
        store.upsert("new", [str(uuid.uuid4())], unit(1, 8, 0), [{"space": "grid"}])
    # A shard as an earlier version made it: no payload index (written with the engine directly).
    params = qe.EdgeVectorParams(size=8, distance=qe.Distance.Cosine, datatype=qe.VectorStorageDatatype.Float16)
    old = qe.EdgeShard.create(str(tmp_path / "s" / "collections" / "old"), qe.EdgeConfig(vectors=params))
    ids = [str(uuid.uuid4()) for _ in range(6)]
    rows = unit(6, 8, 1).tolist()
    points = [qe.Point(i, rows[n], {"space": ALL_SPACES[n % 2]}) for n, i in enumerate(ids)]
    old.update(qe.UpdateOperation.upsert_points(points))
    old.flush()
    assert "space" not in old.info().payload_schema
    old.close()
    with EdgeStore(tmp_path / "s") as store:
        assert store.spaces("old") == {ALL_SPACES[0]: 3, ALL_SPACES[1]: 3}
        assert store.search("old", unit(6, 8, 1)[3], limit=1, space=ALL_SPACES[1])[0].id == ids[3]
        assert store.spaces("new") == {"grid": 1}
    for name in ("new", "old"):
        shard = qe.EdgeShard.load(str(tmp_path / "s" / "collections" / name))
        assert "space" in shard.info().payload_schema
        shard.close()

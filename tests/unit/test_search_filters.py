"""Search filters mean the same in every store: the engines' filters agree with SearchFilter.matches.

One small collection is stored in each backend (edge, qdrant-client's local mode for the server
code path, the encrypted index, and the edge store read through its owner as a reader in another
process would); hypothesis draws filters, and every store must return exactly the stored points
the filter's reference meaning keeps, ranked as an unfiltered search ranks them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stores.encindex import generate_key
from stores.encindex.store import EncryptedStore
from stores.vectorstore import FilterError, SearchFilter, StoreLockedError, VectorStore
from stores.vectorstore.edge import EdgeStore
from stores.vectorstore.server import ServerStore
from stores.vectorstore.shared import SharedStore, serve_queries
from tests.unit.encindex.helpers import enc_settings

DIM = 16
N = 60
MEDIA = ("m0", "m1", "m2", "m3")
LABELS = ("person", "bus", None)
META = ({"team": "a"}, {"team": "b", "cam": "x"}, {})


def _points() -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((N, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [str(uuid.UUID(int=i + 1)) for i in range(N)]
    payloads = [
        {
            "space": "object",
            "media_id": MEDIA[i % 4],
            "frame_index": i,
            "timestamp_s": i * 0.5,
            "label": LABELS[i % 3],
            "meta": META[i % 3],
        }
        for i in range(N)
    ]
    return ids, vectors.astype(np.float16), payloads


IDS, VECTORS, PAYLOADS = _points()
QUERY = VECTORS[0].astype(np.float32)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, VectorStore]]:
    root = tmp_path_factory.mktemp("filters")
    edge = EdgeStore(root / "edge")
    local = ServerStore.local(root / "local")
    encrypted = EncryptedStore(root / "enc", generate_key(), enc_settings(root))
    owner = serve_queries(EdgeStore(root / "owned"), root / "owned")
    for store, name in ((edge, "c"), (local, "c"), (encrypted, "c"), (owner, "c")):
        store.ensure_collection(name, DIM)
        store.upsert(name, IDS, VECTORS, PAYLOADS)
    reader = SharedStore.connect(root / "owned", StoreLockedError("the owner serves no queries"))
    yield {"edge": edge, "local": local, "encrypted": encrypted, "shared": reader}
    for store in (edge, local, encrypted, reader, owner):
        store.close()


def _expected(where: SearchFilter) -> list[str]:
    scores = VECTORS.astype(np.float32) @ QUERY
    order = sorted(range(N), key=lambda i: (-scores[i], IDS[i]))
    return [IDS[i] for i in order if where.matches(IDS[i], PAYLOADS[i])]


@st.composite
def filters(draw: st.DrawFn) -> SearchFilter:
    bounds = [draw(st.none() | st.floats(0, 30, allow_nan=False)) for _ in range(2)]
    if None not in bounds:
        bounds.sort()  # an inverted range is refused (test_a_filter_refuses_what_it_cannot_apply)
    meta = (("team", "a"), ("team", "b"), ("cam", "x"), ("cam", "y"))
    return SearchFilter(
        media_ids=tuple(draw(st.lists(st.sampled_from((*MEDIA, "nowhere")), max_size=3, unique=True))),
        labels=tuple(draw(st.lists(st.sampled_from(("person", "bus", "car")), max_size=2, unique=True))),
        time_from_s=bounds[0],
        time_to_s=bounds[1],
        meta=tuple(draw(st.lists(st.sampled_from(meta), max_size=2, unique=True))),
        exclude_ids=tuple(draw(st.lists(st.sampled_from(IDS), max_size=3, unique=True))),
    )


@pytest.mark.parametrize("backend", ["edge", "local", "encrypted", "shared"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=filters())
def test_every_store_keeps_exactly_what_the_filter_means(
    stores: dict[str, VectorStore], backend: str, where: SearchFilter
) -> None:
    expected = _expected(where)
    store = stores[backend]
    hits = store.search("c", QUERY, limit=N, where=where)
    assert {h.id for h in hits} == set(expected)
    assert all(where.matches(h.id, h.payload) for h in hits)
    top = store.search("c", QUERY, limit=3, where=where)
    assert [h.id for h in top] == expected[:3]


def test_counts_apply_the_filter(stores: dict[str, VectorStore]) -> None:
    where = SearchFilter(media_ids=("m1",), labels=("bus",))
    for backend in ("edge", "local", "shared"):
        assert stores[backend].count("c", where=where) == len(_expected(where))  # type: ignore[call-arg]


def test_a_filter_refuses_what_it_cannot_apply() -> None:
    with pytest.raises(FilterError, match="metadata key"):
        SearchFilter(meta=(("a.b", "x"),))
    with pytest.raises(FilterError, match="at most 100"):
        SearchFilter(media_ids=tuple(f"m{i}" for i in range(101)))
    with pytest.raises(FilterError, match="finite"):
        SearchFilter(time_to_s=float("inf"))
    with pytest.raises(FilterError, match="is after time_to_s 2: nothing could match"):
        SearchFilter(time_from_s=5.0, time_to_s=2.0)
    assert not SearchFilter() and SearchFilter(time_from_s=0.0)


def test_the_wire_form_reads_back_as_the_same_filter() -> None:
    where = SearchFilter(
        media_ids=("m1",), labels=("bus",), time_from_s=1.0, time_to_s=2.5, meta=(("team", "a"),), exclude_ids=IDS[:2]
    )
    assert SearchFilter.from_json(where.to_json()) == where
    assert SearchFilter.from_json(None) is None

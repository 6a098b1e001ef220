"""`search --space all --per-space N`: a space whose scores run high (text rows under a text query,
the modality gap) cannot fill the whole list; every space keeps its N best. Real open_clip models
on random weights embed the query, the real embedded Qdrant store answers."""

from __future__ import annotations

import numpy as np
import pytest

from consumers.sink_qdrant.sink import QdrantSink
from mediavec.search import QueryModels, search
from mediavec.settings import Settings
from models.settings import ConceptSettings, ModelSettings
from schemas import VectorBatch, VectorRow, encode_vector_batch, point_id
from streams.stage import InputRecord

QUERY = "a red double-decker bus"
N = 5  # rows per space


def _near(q: np.ndarray, closeness: float, seed: int) -> np.ndarray:
    """A unit vector whose cosine with ``q`` is about ``closeness``."""
    noise = np.random.default_rng(seed).standard_normal(q.shape).astype(np.float32)
    noise -= noise @ q / (q @ q) * q
    v = closeness * q / np.linalg.norm(q) + np.sqrt(1 - closeness**2) * noise / np.linalg.norm(noise)
    return v / np.linalg.norm(v)


def _batch(model: str, space: str, q: np.ndarray, closeness: float) -> VectorBatch:
    vectors = np.stack([_near(q, closeness - 0.01 * i, i) for i in range(N)]).astype(np.float16)
    rows = tuple(VectorRow(point_id(model, f"m{i}", 0, space), space, f"m{i}", 0, 0.0) for i in range(N))  # type: ignore[arg-type]
    return VectorBatch(model, vectors, rows, "http://127.0.0.1/m.png", "shop")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("per-space"),
        model=ModelSettings(allow_random_weights=True, device="cpu"),
        concept=ConceptSettings(arch="ViT-S-32", allow_random_weights=True, device="cpu"),
    )


@pytest.fixture(scope="module")
def models(settings: Settings) -> QueryModels:
    """The query models, and a store where scene rows score about 0.9 and grid rows about 0.5."""
    models = QueryModels(settings)
    vision, concept = models.model_id("vision"), models.model_id("concept")
    q_vision = models.clip("vision", vision).embed_texts([QUERY])[0].astype(np.float32)
    q_concept = models.clip("concept", concept).embed_texts([QUERY])[0].astype(np.float32)
    batches = [_batch(vision, "scene", q_vision, 0.9), _batch(concept, "grid", q_concept, 0.5)]
    records = [InputRecord("t.vectors", 0, i, b"k", encode_vector_batch(b)) for i, b in enumerate(batches)]
    sink = QdrantSink(settings)
    sink.start()
    try:
        good, bad = sink.split(records)
        assert len(good) == 2 and not bad
        sink.write(good, {("t.vectors", 0): len(records)})
    finally:
        sink.close()
    return models


def _spaces(settings: Settings, models: QueryModels, **kw: object) -> list[str]:
    hits = search(settings, text=QUERY, collection="shop", space="all", limit=6, models=models, **kw)  # type: ignore[arg-type]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    return [str(h.payload["space"]) for h in hits]


def test_the_merged_list_is_by_score_alone_by_default(settings: Settings, models: QueryModels) -> None:
    assert _spaces(settings, models) == ["scene"] * N + ["grid"]


def test_per_space_keeps_the_best_of_every_space(settings: Settings, models: QueryModels) -> None:
    assert _spaces(settings, models, per_space=3) == ["scene"] * 3 + ["grid"] * 3
    assert _spaces(settings, models, per_space=1) == ["scene", "grid"]
    one = search(settings, text=QUERY, collection="shop", space="grid", limit=6, per_space=2, models=models)
    assert [h.payload["media_id"] for h in one] == ["m0", "m1"]  # one space: per_space caps it too

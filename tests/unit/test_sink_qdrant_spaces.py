"""One frame's batches of every model through the Qdrant sink: a collection per model, spaces inside.

The model ids are the ones the embed stage's models report, so the collection names read back as
model ids (three dot-separated parts), which is how search and aliases find a version's model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from consumers.sink_qdrant.sink import QdrantSink
from mediavec.settings import Settings
from schemas import VectorBatch, VectorRow, encode_vector_batch, point_id
from schemas.collections import collection_for, model_from_collection
from schemas.spaces import SpaceName
from streams.stage import InputRecord

VISION = "open_clip/ViT-B-32/openai"
CONCEPT = "open_clip/MobileCLIP2-S0/dfndr2b"
FACE = "dlib/face_recognition_resnet_v1/128"
MINILM = "sentence-transformers/all-MiniLM-L6-v2/gt"


def _batch(model: str, spaces: list[SpaceName], dim: int, seed: int, media: str = "m1") -> VectorBatch:
    rows = tuple(
        VectorRow(point_id(model, media, 4, space, i), space, media, 4, 2.0, i, (1.0, 2.0, 30.0, 40.0), f"{space} {i}")
        for i, space in enumerate(spaces)
    )
    v = np.random.default_rng(seed).standard_normal((len(rows), dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return VectorBatch(model, v.astype(np.float16), rows, f"http://127.0.0.1/{media}.mp4", "c1")


def _records(batches: list[VectorBatch]) -> list[InputRecord]:
    return [InputRecord("p.vectors", 0, i, b"m1", encode_vector_batch(b)) for i, b in enumerate(batches)]


def test_a_frame_of_every_space_lands_in_one_collection_per_model(tmp_path: Path) -> None:
    vision = _batch(VISION, ["scene", "object", "object", "text", "text", "text"], 256, 1)
    batches = [vision, _batch(CONCEPT, ["grid"] * 16, 256, 2), _batch(FACE, ["face"] * 2, 128, 3)]
    batches.append(_batch(MINILM, ["text"] * 3, 256, 4))
    sink = QdrantSink(Settings(data_dir=tmp_path))
    sink.start()
    try:
        good, bad = sink.split(_records(batches))
        assert len(good) == 4 and not bad
        sink.write(good, {("p.vectors", 0): 4})
        store = sink.store
        names = {m: collection_for("c1", m) for m in (VISION, CONCEPT, FACE, MINILM)}
        assert store.collections() == sorted(names.values())
        assert {m: model_from_collection(n) for m, n in names.items()} == {m: m for m in names}
        assert store.spaces(names[VISION]) == {"scene": 1, "object": 2, "text": 3}
        assert store.spaces(names[CONCEPT]) == {"grid": 16}
        assert (store.spaces(names[FACE]), store.dim(names[FACE])) == ({"face": 2}, 128)
        assert (store.spaces(names[MINILM]), store.dim(names[MINILM])) == ({"text": 3}, 256)
        hits = store.search(names[VISION], vision.vectors[4], limit=10, space="text")
        assert hits[0].payload["label"] == "text 4" and len(hits) == 3
        assert hits[0].payload["box"] == pytest.approx([1.0, 2.0, 30.0, 40.0])
        assert (hits[0].payload["frame_index"], hits[0].payload["timestamp_s"]) == (4, 2.0)
    finally:
        sink.close()

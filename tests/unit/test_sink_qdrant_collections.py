"""QdrantSink asks the store about a collection once per poll, not once per batch, and still
recreates a collection deleted while it runs (the next poll's write makes it again)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from consumers.sink_qdrant.sink import QdrantSink
from mediavec.settings import Settings
from schemas import VectorBatch, VectorRow, encode_vector_batch, point_id
from schemas.collections import collection_for
from streams.stage import InputRecord

MODEL = "open_clip/test/random"
NAME = collection_for("c1", MODEL)


def _record(offset: int) -> InputRecord:
    media = f"m{offset}"
    v = np.random.default_rng(offset).standard_normal((1, 16)).astype(np.float16)
    row = VectorRow(point_id(MODEL, media, 0, "scene"), "scene", media, 0, 0.0)
    batch = VectorBatch(MODEL, v, (row,), f"http://127.0.0.1/{media}.jpg", "c1")
    return InputRecord("p.vectors", 0, offset, media.encode(), encode_vector_batch(batch))


class CountingQdrantSink(QdrantSink):
    """The real sink, counting how often split asks the store for a collection's dimension."""

    asked = 0

    def _collection_dim(self, name: str, dim: int) -> int:
        self.asked += 1
        return super()._collection_dim(name, dim)


def test_split_asks_the_store_once_per_collection(tmp_path: Path) -> None:
    sink = CountingQdrantSink(Settings(data_dir=tmp_path))
    sink.start()
    try:
        for first in (0, 50):
            records = [_record(i) for i in range(first, first + 50)]
            sink.write(sink.split(records)[0], {("p.vectors", 0): first + 50})
        assert sink.asked == 1 and sink.store.count(NAME) == 100
    finally:
        sink.close()


def test_a_collection_deleted_while_the_sink_runs_is_made_again_by_the_next_write(tmp_path: Path) -> None:
    sink = QdrantSink(Settings(data_dir=tmp_path))
    sink.start()
    try:
        sink.write(sink.split([_record(0)])[0], {("p.vectors", 0): 1})
        sink.store.delete_collection(NAME)
        sink.write(sink.split([_record(1), _record(2)])[0], {("p.vectors", 0): 3})
        assert sink.store.count(NAME) == 2 and sink.load_offsets() == {("p.vectors", 0): 3}
    finally:
        sink.close()

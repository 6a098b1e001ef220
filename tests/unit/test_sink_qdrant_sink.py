"""QdrantSink against the real embedded store (no Kafka): write, offsets, replays, bad batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from consumers.sink_qdrant.sink import QdrantSink
from mediavec.settings import Settings
from schemas import VectorBatch, VectorRow, encode_vector_batch, point_id
from schemas.collections import collection_for
from streams.stage import InputRecord

MODEL = "open_clip/test/random"


def _record(offset: int, media: str, dim: int = 16, partition: int = 0) -> InputRecord:
    v = np.random.default_rng(offset).standard_normal((1, dim)).astype(np.float16)
    row = VectorRow(point_id(MODEL, media, 0, "scene"), "scene", media, 0, 0.0)
    batch = VectorBatch(MODEL, v, (row,), f"http://127.0.0.1/{media}.jpg", "c1")
    return InputRecord("p.vectors", partition, offset, media.encode(), encode_vector_batch(batch))


def test_write_records_points_and_offsets_and_replays_overwrite(tmp_path: Path) -> None:
    sink = QdrantSink(Settings(data_dir=tmp_path))
    sink.start()
    try:
        records = [_record(i, f"m{i}") for i in range(10)]
        good, bad = sink.split(records)
        assert len(good) == 10 and not bad
        sink.write(good, {("p.vectors", 0): 10})
        sink.write(good, {("p.vectors", 0): 10})  # a replay of the same batch
        name = collection_for("c1", MODEL)
        assert sink.store.count(name) == 10
        assert sink.load_offsets() == {("p.vectors", 0): 10}
    finally:
        sink.close()
    reopened = QdrantSink(Settings(data_dir=tmp_path))
    reopened.start()
    try:
        assert reopened.load_offsets() == {("p.vectors", 0): 10}
    finally:
        reopened.close()


def test_garbage_and_dimension_mismatch_are_failures(tmp_path: Path) -> None:
    sink = QdrantSink(Settings(data_dir=tmp_path))
    sink.start()
    try:
        first = [_record(0, "a", dim=16)]
        sink.write(sink.split(first)[0], {("p.vectors", 0): 1})
        garbage = InputRecord("p.vectors", 0, 1, b"k", b"not avro")
        good, bad = sink.split([garbage, _record(2, "b", dim=32), _record(3, "c", dim=16)])
        assert [r.offset for r in good] == [3]
        assert [(r.offset, f.error_class) for r, f in bad] == [(1, "invalid_vector_batch"), (2, "dimension_mismatch")]
        assert "32-d vectors" in bad[1][1].reason and bad[1][1].media_id == "b"
    finally:
        sink.close()

"""The sink base (consumers.sink.VectorSink) over a real store: qdrant-client's local mode, no Kafka.

The sink below is the base plus the least a concrete sink adds (open a store, read and write it),
so what is asserted is the base's part: one decode per record, the dead letters of a poll, the
rows grouped by collection, the offsets written with them and read back after a restart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from consumers.settings import ConsumerSettings
from consumers.sink import CollectionUpsert, Decoded, VectorSink
from schemas import VectorBatch, VectorRow, encode_vector_batch, point_id
from schemas.collections import collection_for
from stores.vectorstore import QdrantStore
from stores.vectorstore.server import ServerStore
from streams.offsets import Offsets, next_offsets, topic_partitions
from streams.stage import Failure, InputRecord, TopicKey

MODEL = "open_clip/test/random"
TOPIC = "t.vectors"
REFUSED = "refused"  # media id the sink's own check refuses


class LocalSink(VectorSink[QdrantStore]):
    """The base over qdrant-client local mode; it keeps what the base handed to its hooks."""

    name = "sink-base-test"
    input_topic: TopicKey = "vectors"

    def __init__(self, settings: ConsumerSettings) -> None:
        super().__init__(settings)
        self.checked: dict[int, VectorBatch] = {}  # offset -> the batch split decoded
        self.groups_written: list[dict[str, CollectionUpsert]] = []
        self.polled: list[Decoded] = []

    def open_store(self) -> QdrantStore:
        return ServerStore.local(self.settings.qdrant_path)

    def stored_offsets(self) -> Offsets:
        return self.store.load_offsets(self.consumer_name)

    def refuse(self, polled: Decoded, claimed: dict[str, int]) -> Failure | None:
        self.checked[polled.record.offset] = polled.batch
        media = polled.batch.rows[0].media_id
        return Failure("refused", "the sink's own check", media_id=media) if media == REFUSED else None

    def write_polled(self, polled: list[Decoded], offsets: Offsets) -> None:
        self.polled = polled
        groups = self.groups(polled)
        for g in groups.values():
            self.store.ensure_collection(g.name, g.dim)
            self.store.upsert(g.name, g.ids, g.vectors, g.payloads)
        self.store.save_offsets(self.consumer_name, offsets)
        self.groups_written.append(groups)


def _batch(media: str, collection: str = "c1", rows: int = 1) -> VectorBatch:
    vectors = np.random.default_rng(len(media)).standard_normal((rows, 8)).astype(np.float16)
    found = tuple(VectorRow(point_id(MODEL, media, 0, "object", i), "object", media, 0, 0.0, i) for i in range(rows))
    return VectorBatch(MODEL, vectors, found, f"http://127.0.0.1/{media}.jpg", collection)


def _record(partition: int, offset: int, value: VectorBatch | bytes) -> InputRecord:
    raw = value if isinstance(value, bytes) else encode_vector_batch(value)
    return InputRecord(TOPIC, partition, offset, b"k", raw)


@pytest.fixture
def settings(tmp_path: Path) -> ConsumerSettings:
    return ConsumerSettings(data_dir=tmp_path, topics={"prefix": "t."})


def test_a_bad_record_among_good_ones_is_one_dead_letter_and_the_rest_land_by_collection(
    settings: ConsumerSettings,
) -> None:
    records = [
        _record(0, 0, _batch("a", "c1", rows=2)),
        _record(0, 1, b"not a vector batch"),
        _record(0, 2, _batch("b", "c2")),
        _record(0, 3, _batch("empty", rows=0)),  # nothing to store, neither good nor bad
        _record(1, 7, _batch("c", "c1")),
        _record(1, 8, _batch(REFUSED)),
    ]
    sink = LocalSink(settings)
    sink.start()
    try:
        good, bad = sink.split(records)
        assert [(r.partition, r.offset) for r in good] == [(0, 0), (0, 2), (1, 7)]
        assert [(r.offset, f.error_class) for r, f in bad] == [(1, "invalid_vector_batch"), (8, "refused")]
        assert bad[1][1].media_id == REFUSED
        sink.write(good, next_offsets(records))
        assert [p.batch for p in sink.polled] == [sink.checked[0], sink.checked[2], sink.checked[7]]
        assert all(p.batch is sink.checked[p.record.offset] for p in sink.polled), "each record decoded once"
        (groups,) = sink.groups_written
        c1, c2 = collection_for("c1", MODEL), collection_for("c2", MODEL)
        assert {n: len(g.ids) for n, g in groups.items()} == {c1: 3, c2: 1}
        assert (sink.store.count(c1), sink.store.count(c2)) == (3, 1)
        assert {p["media_id"] for p in groups[c1].payloads} == {"a", "c"}
    finally:
        sink.close()
    restarted = LocalSink(settings)
    restarted.start()
    try:
        assert restarted.consumer_name == "t.mediavec.sink-base-test"
        assert restarted.load_offsets() == {(TOPIC, 0): 4, (TOPIC, 1): 9}, "past the dead letters and the empty batch"
    finally:
        restarted.close()


def test_offsets_alone_are_written_and_a_write_without_split_decodes_for_itself(settings: ConsumerSettings) -> None:
    sink = LocalSink(settings)
    sink.start()
    try:
        sink.write([], {(TOPIC, 0): 5})  # the runner's probe: offsets only
        assert sink.load_offsets() == {(TOPIC, 0): 5} and sink.store.collections() == []
        records = [_record(0, 5, _batch("d")), _record(0, 6, _batch("e"))]
        sink.write(records, {(TOPIC, 0): 7})  # never split: a retry after a failed write does this
        assert sink.store.count(collection_for("c1", MODEL)) == 2 and not sink.checked
        assert sink.load_offsets() == {(TOPIC, 0): 7}
    finally:
        sink.close()
    with pytest.raises(RuntimeError, match="sink not started"):
        sink.load_offsets()


def test_next_offsets_are_one_past_the_last_record_of_each_partition() -> None:
    records = [_record(1, 4, b""), _record(0, 9, b""), _record(1, 2, b""), _record(0, 3, b"")]
    assert next_offsets(records) == {(TOPIC, 1): 5, (TOPIC, 0): 10}
    assert [(tp.topic, tp.partition, tp.offset) for tp in topic_partitions(next_offsets(records))] == [
        (TOPIC, 1, 5),
        (TOPIC, 0, 10),
    ]

"""sink-encrypted through the real broker: StoreSinkRunner in a thread, restarts, replays, small shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import KafkaError, KafkaException

from consumers.sink_encrypted.sink import EncryptedSink, collection_name
from mediavec.settings import Settings
from schemas import VectorBatch, VectorRow, encode_vector_batch, point_id
from stores.encindex import EncIndexSettings, IndexKey, generate_key, write_key_file
from stores.encindex.store import EncryptedStore
from streams.admin import ensure_topics
from streams.kafka import admin, producer
from streams.sink_runner import StoreSinkRunner
from streams.topics import topics
from tests.kafkautil import ThreadWorker, wait_for

pytestmark = pytest.mark.integration

DIM = 32
MODEL = "open_clip/test/random"
CAPACITY = 25  # small shards, so that replays must find ids in sealed ones


def _vector(media: str, index: int) -> np.ndarray:
    seed = int.from_bytes(f"{media}/{index}".encode()[:8].ljust(8, b"\0"), "little")
    v = np.random.default_rng(seed).standard_normal(DIM)
    return (v / np.linalg.norm(v)).astype(np.float16)


def _batch(i: int) -> VectorBatch:
    media = f"m{i}"
    rows = [VectorRow(point_id(MODEL, media, 0, "scene"), "scene", media, 0, 0.0)]
    rows += [
        VectorRow(point_id(MODEL, media, 0, "object", k), "object", media, 0, 0.0, k, (0.0, 0.0, 0.5, 0.5), "thing")
        for k in range(1, 1 + i % 3)
    ]
    vectors = np.stack([_vector(media, k) for k in range(len(rows))])
    return VectorBatch(MODEL, vectors, tuple(rows), f"http://127.0.0.1/{media}.jpg", "c1")


def _produce(settings: Settings, numbers: list[int]) -> None:
    p = producer(settings)
    name = topics(settings).vectors.name
    for i in numbers:
        p.produce(name, key=f"m{i}".encode(), value=encode_vector_batch(_batch(i)))
    assert p.flush(30) == 0


def _expected(first: int, n: int) -> dict[str, int]:
    return {
        collection_name("c1", MODEL, "scene"): n,
        collection_name("c1", MODEL, "object"): sum(i % 3 for i in range(first, first + n)),
    }


def _runner(settings: Settings, key_file: Path) -> tuple[StoreSinkRunner, EncryptedSink]:
    sink = EncryptedSink(settings, EncIndexSettings(key_file=key_file, shard_capacity=CAPACITY))
    return StoreSinkRunner(settings, sink, batch_size=16, batch_deadline_s=0.2), sink


def _landed(sink: EncryptedSink, counts: dict[str, int], messages: int) -> bool:
    """True once the store holds ``counts`` and has recorded offsets past ``messages`` events."""
    store = sink._store  # the runner's thread starts and closes it
    if store is None:
        return False
    try:
        held = {name: store.count(name) for name in store.collections()}
    except Exception:  # closed under us
        return False
    return held == counts and sum(sink.load_offsets().values()) == messages


def _delete_group(settings: Settings, group: str) -> bool:
    client = admin(settings)  # kept referenced: a collected AdminClient never resolves its futures
    try:
        for fut in client.delete_consumer_groups([group], request_timeout=30).values():
            fut.result(timeout=60)
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.NON_EMPTY_GROUP:  # the closed member has not left yet
            return False
        raise
    return True


def test_runner_lands_every_vector_once_and_resumes_from_the_stored_offsets(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings)
    key: IndexKey = generate_key()
    key_file = tmp_path / "index.key"
    write_key_file(key_file, key)
    _produce(settings, [*range(40), *range(10)])  # m0..m9 published twice: the same point ids
    runner, first = _runner(settings, key_file)
    with ThreadWorker(runner):
        wait_for(lambda: _landed(first, _expected(0, 40), 50), 120, "the first 50 batches")
    assert first.records_written >= 50
    # Forget the group's (advisory) committed offsets: only the store can tell where to resume.
    wait_for(lambda: _delete_group(settings, runner.group), 90, "the stopped group to empty and be deleted")
    _produce(settings, [*range(40, 60), *range(20, 25)])
    runner2, second = _runner(settings, key_file)
    with ThreadWorker(runner2):
        wait_for(lambda: _landed(second, _expected(0, 60), 75), 120, "all 75 batches")
    assert second.records_written == 25  # resumed from the stored offsets, not from the start

    store = EncryptedStore(settings.data_dir / "encindex", key, EncIndexSettings(shard_capacity=CAPACITY))
    try:
        scene = collection_name("c1", MODEL, "scene")
        assert {n: store.count(n) for n in store.collections()} == _expected(0, 60)
        shards = store.shards(scene)
        assert len(shards) == 3 and all(s.count <= CAPACITY for s in shards)
        for i in (0, 24, 59):
            hit = store.search(scene, _vector(f"m{i}", 0), limit=1)[0]
            assert hit.id == point_id(MODEL, f"m{i}", 0, "scene") and hit.payload["media_id"] == f"m{i}"
    finally:
        store.close()

"""Shards, training, search, a wrong key, the store lock, rekey and the offsets file.

The encrypted index runs on the real cyborgdb-core engine (no Kafka). Vectors are 32-d: the engine
trains only dimensions that are multiples of 32, and only once an index holds 10,000 vectors, so the
training tests write 10,000+ small vectors (about a second).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stores.encindex import IndexKey, generate_key, merge_hits
from stores.encindex.manifest import load_manifest
from stores.encindex.offsets import SLOT, OffsetsFile
from stores.encindex.rekey import rekey
from stores.encindex.shards import Shard, WrongKeyError, open_client
from stores.encindex.store import EncryptedStore
from stores.vectorstore.base import Hit, StoreLockedError, VectorStoreError
from tests.unit.encindex.helpers import DIM, NAME, enc_settings, payloads, point_ids, unit_vectors

# -- shards, search, replays ---------------------------------------------------------------------


def test_shards_roll_over_before_capacity_and_replays_overwrite_in_place(store: EncryptedStore) -> None:
    ids, vectors = point_ids(180, "roll"), unit_vectors(180, 1)
    for lo in range(0, 180, 40):
        store.upsert(NAME, ids[lo : lo + 40], vectors[lo : lo + 40], payloads(180, "first")[lo : lo + 40])
    shards = store.shards(NAME)
    assert [s.count for s in shards] == [50, 50, 50, 30]
    assert [s.sealed for s in shards] == [True, True, True, False]
    assert store.count(NAME) == 180
    # The same ids again, in other groupings, with new payloads: every point stays where it is.
    store.upsert(NAME, ids[::-1], vectors[::-1], payloads(180, "second")[::-1])
    store.upsert(NAME, ids[60:70], vectors[60:70], payloads(180, "second")[60:70])
    assert [s.count for s in store.shards(NAME)] == [50, 50, 50, 30] and store.count(NAME) == 180
    point = store.retrieve(NAME, [ids[75]])[0]
    assert point.payload == {"media_id": "second-75", "frame_index": 75}
    assert point.vector is not None and np.allclose(point.vector, vectors[75].astype(np.float32), atol=1e-3)


def test_search_across_shards_returns_the_exact_vector_first(store: EncryptedStore) -> None:
    ids, vectors = point_ids(130, "search"), unit_vectors(130, 2)
    store.upsert(NAME, ids, vectors, payloads(130, "m"))
    assert len(store.shards(NAME)) == 3
    for i in (3, 57, 129):  # one from each shard
        hits = store.search(NAME, vectors[i], limit=5)
        assert hits[0].id == ids[i] and hits[0].payload["media_id"] == f"m-{i}"
        assert hits[0].score == pytest.approx(1.0, abs=1e-3)
        assert len(hits) == 5 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        second = vectors[ids.index(hits[1].id)].astype(np.float32)
        cosine = float(second @ vectors[i].astype(np.float32))
        assert hits[1].score == pytest.approx(cosine, abs=2e-3)


def test_upserting_the_same_ids_twice_keeps_the_count(store: EncryptedStore) -> None:
    ids, vectors = point_ids(30, "twice"), unit_vectors(30, 3)
    store.upsert(NAME, ids, vectors, payloads(30, "a"))
    store.upsert(NAME, [i.upper() for i in ids], vectors, payloads(30, "b"))  # same UUIDs, other spelling
    assert store.count(NAME) == 30 and len(store.shards(NAME)) == 1


def test_merge_hits_ranks_by_score_and_keeps_each_id_once() -> None:
    encrypted = [Hit("a", 0.9, {"s": "enc"}), Hit("b", 0.5, {}), Hit("c", 0.7, {})]
    qdrant = [Hit("a", 0.8, {"s": "qdrant"}), Hit("d", 0.7, {}), Hit("e", 0.95, {})]
    merged = merge_hits([encrypted, qdrant], limit=4)
    assert [h.id for h in merged] == ["e", "a", "c", "d"]  # c and d tie at 0.7: by id
    assert merged[1].payload == {"s": "enc"}  # the better-scored copy of a
    assert merge_hits([encrypted, qdrant], limit=0) == [] and len(merge_hits([qdrant], limit=10)) == 3


def test_background_training_runs_while_ingest_goes_on(tmp_path: Path, key: IndexKey) -> None:
    store = EncryptedStore(tmp_path / "enc", key, enc_settings(tmp_path))
    try:
        store.ensure_collection(NAME, DIM)
        n = 10_240
        ids, vectors = point_ids(n + 4096, "train"), unit_vectors(n + 4096, 4)
        for lo in range(0, n, 1024):
            store.upsert(NAME, ids[lo : lo + 1024], vectors[lo : lo + 1024], payloads(n + 4096, "t")[lo : lo + 1024])
        assert store.trainer.wait_started(60) == store.shards(NAME)[0].index
        during, lo = 0, n
        while store.trainer.current is not None and lo < n + 4096:
            store.upsert(NAME, ids[lo : lo + 128], vectors[lo : lo + 128], payloads(n + 4096, "t")[lo : lo + 128])
            lo += 128
            during += store.trainer.current is not None  # this write finished while training ran
        assert during >= 1
        assert store.wait_for_training(120)
        [shard] = store.shards(NAME)
        assert shard.training_state == "trained" and shard.count == lo
        manifest = load_manifest(tmp_path / "enc")
        assert manifest is not None and manifest.collections[NAME].shards[0].trained_count >= n
        store.upsert(NAME, ids[:128], vectors[:128], payloads(128, "t"))
        assert not store.trainer.busy()  # trained, and not grown enough to train again
        for i in (0, n - 1, n, lo - 1):  # before, at and after the training began
            assert store.search(NAME, vectors[i], limit=1, n_probes=10_000)[0].id == ids[i]
    finally:
        store.close()


def test_a_dimension_the_engine_cannot_train_stays_searchable(
    tmp_path: Path, key: IndexKey, caplog: pytest.LogCaptureFixture
) -> None:
    store = EncryptedStore(tmp_path / "enc", key, enc_settings(tmp_path))
    try:
        store.ensure_collection("odd", 48)
        ids, vectors = point_ids(10_000, "odd"), unit_vectors(10_000, 5, dim=48)
        store.upsert("odd", ids, vectors, payloads(10_000, "o"))
        assert store.wait_for_training(120)
        assert store.shards("odd")[0].training_state == "untrained"
        assert "stays untrained" in caplog.text and "divisible" in caplog.text
        manifest = load_manifest(tmp_path / "enc")
        assert manifest is not None and manifest.collections["odd"].shards[0].failed_count == 10_000
        store.upsert("odd", ids[:10], vectors[:10], payloads(10, "again"))
        assert not store.trainer.busy()  # no retry before the shard has grown
        assert store.search("odd", vectors[9876], limit=1)[0].id == ids[9876]
    finally:
        store.close()


# -- keys against the store ----------------------------------------------------------------------


def test_a_wrong_key_fails_cleanly(tmp_path: Path, key: IndexKey, store: EncryptedStore) -> None:
    store.upsert(NAME, point_ids(5, "k"), unit_vectors(5, 6), payloads(5, "k"))
    store.close()
    other = generate_key()
    with pytest.raises(WrongKeyError, match="encrypted under key id") as err:
        EncryptedStore(tmp_path / "enc", other, enc_settings(tmp_path))
    assert other.reveal().hex() not in str(err.value) and key.reveal().hex() not in str(err.value)
    # The engine's own check, behind the manifest's: a shard opened with the wrong key.
    client = open_client(str(tmp_path / "enc" / "engine"), 0)
    with pytest.raises(WrongKeyError, match="does not open this index") as err:
        Shard.load(client, f"{NAME}__g1__s0001", other)
    assert other.reveal().hex() not in str(err.value)
    # A store whose manifest is gone refuses to bind a new one to whatever key comes first.
    (tmp_path / "enc" / "manifest.json").unlink()
    with pytest.raises(VectorStoreError, match="no manifest"):
        EncryptedStore(tmp_path / "enc", other, enc_settings(tmp_path))


def test_one_process_per_store_directory(tmp_path: Path, key: IndexKey, store: EncryptedStore) -> None:
    with pytest.raises(StoreLockedError):
        EncryptedStore(tmp_path / "enc", key, enc_settings(tmp_path))


def test_rekey_rebuilds_every_shard_under_the_new_key(tmp_path: Path, key: IndexKey, store: EncryptedStore) -> None:
    ids, vectors = point_ids(120, "rekey"), unit_vectors(120, 7)
    store.upsert(NAME, ids, vectors, payloads(120, "r"))
    store.save_offsets("sink", {("t", 0): 42})
    store.close()
    new = generate_key()
    report = rekey(tmp_path / "enc", key, new, enc_settings(tmp_path))
    assert (report.generation, report.shards, report.items, report.deleted) == (2, 3, 120, 3)
    with pytest.raises(WrongKeyError):
        EncryptedStore(tmp_path / "enc", key, enc_settings(tmp_path))
    reopened = EncryptedStore(tmp_path / "enc", new, enc_settings(tmp_path, capacity=50))
    try:
        assert [s.count for s in reopened.shards(NAME)] == [50, 50, 20]
        assert all("__g2__" in s.index for s in reopened.shards(NAME))
        hit = reopened.search(NAME, vectors[77], limit=1)[0]
        assert hit.id == ids[77] and hit.payload == {"media_id": "r-77", "frame_index": 77}
        assert reopened.load_offsets("sink") == {("t", 0): 42}
    finally:
        reopened.close()
    again = rekey(tmp_path / "enc", key, new, enc_settings(tmp_path))  # a rerun finds nothing left to do
    assert (again.shards, again.deleted) == (0, 0)


def test_offsets_survive_a_reopen_and_a_torn_last_write(tmp_path: Path) -> None:
    first = OffsetsFile(tmp_path, "sink")
    first.save({("t", 0): 5, ("t", 1): 7})
    first.save({("t", 0): 9})  # merged over the earlier record
    first.close()
    again = OffsetsFile(tmp_path, "sink")
    assert again.offsets == {("t", 0): 9, ("t", 1): 7}
    again.save({("t", 1): 11})
    again.close()
    # Tear the latest record (sequence 3, odd slot): the previous one must win.
    with open(tmp_path / "sink.offsets", "r+b") as f:
        f.seek(SLOT + 40)
        f.write(b"garbage")
    torn = OffsetsFile(tmp_path, "sink")
    assert torn.offsets == {("t", 0): 9, ("t", 1): 7}
    torn.close()

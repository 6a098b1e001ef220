"""The encrypted index on the real cyborgdb-core engine (no Kafka): keys, shards, training, search, rekey.

Vectors are 32-d: the engine trains only dimensions that are multiples of 32, and only once an
index holds 10,000 vectors, so the training tests write 10,000+ small vectors (about a second).
"""

from __future__ import annotations

import logging
import os
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from consumers.sink_encrypted.sink import EncryptedSink, collection_name
from mediavec.encindex import EncIndexSettings, IndexKey, IndexKeyError, generate_key, load_key, merge_hits, parse_key
from mediavec.encindex.keys import write_key_file
from mediavec.encindex.manifest import load_manifest
from mediavec.encindex.offsets import SLOT, OffsetsFile
from mediavec.encindex.rekey import rekey
from mediavec.encindex.shards import EngineError, Shard, WrongKeyError, open_client
from mediavec.encindex.store import EncryptedStore
from mediavec.vectorstore.base import Hit, StoreLockedError, VectorStoreError
from schemas import VectorBatch, VectorRow, encode_vector_batch, point_id
from streams.settings import Settings
from streams.stage import InputRecord

DIM = 32
NAME = "c1__test-model__scene"
MODEL = "open_clip/test/random"


def _vectors(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16)


def _ids(n: int, tag: str) -> list[str]:
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tag}/{i}")) for i in range(n)]


def _payloads(n: int, tag: str) -> list[dict[str, object]]:
    return [{"media_id": f"{tag}-{i}", "frame_index": i} for i in range(n)]


def _enc(tmp_path: Path, capacity: int = 900_000) -> EncIndexSettings:
    return EncIndexSettings(path=tmp_path / "enc", shard_capacity=capacity)


@pytest.fixture
def key() -> IndexKey:
    return generate_key()


@pytest.fixture
def store(tmp_path: Path, key: IndexKey) -> Iterator[EncryptedStore]:
    s = EncryptedStore(tmp_path / "enc", key, _enc(tmp_path, capacity=50))
    s.ensure_collection(NAME, DIM)
    yield s
    s.close()


# -- keys ----------------------------------------------------------------------------------------


def test_key_from_raw_file_hex_file_and_variable(tmp_path: Path, key: IndexKey) -> None:
    raw, hexed = tmp_path / "raw.key", tmp_path / "hex.key"
    raw.write_bytes(key.reveal())
    hexed.write_text(f"  {key.reveal().hex().upper()}\n")
    for path in (raw, hexed):
        path.chmod(0o600)
        assert load_key(path, None) == key
    env = {"MY_INDEX_KEY": key.reveal().hex()}
    loaded = load_key(None, "MY_INDEX_KEY", env)
    assert loaded == key and loaded.key_id == key.key_id
    written = tmp_path / "new.key"
    write_key_file(written, key)
    assert load_key(written, None) == key and written.stat().st_mode & 0o777 == 0o600


def test_missing_or_doubly_configured_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(IndexKeyError, match="no index key configured"):
        load_key(None, None, {})
    with pytest.raises(IndexKeyError, match="not set"):
        load_key(None, "ABSENT_KEY_VARIABLE", {})
    with pytest.raises(IndexKeyError, match="only one"):
        load_key(tmp_path / "k", "X", {"X": "00" * 32})
    with pytest.raises(IndexKeyError, match="cannot read"):
        load_key(tmp_path / "missing.key", None)
    with pytest.raises(IndexKeyError, match="no index key configured"):
        EncryptedSink(Settings(data_dir=tmp_path)).start()  # no source set: never a default key


@pytest.mark.parametrize(
    "content",
    [b"\x01" * 31, b"\x01" * 33, b"ab" * 16, b"ab" * 31 + b"zz", b"ab" * 33, b""],
    ids=["raw-31", "raw-33", "hex-16-bytes", "not-hex", "hex-33-bytes", "empty"],
)
def test_wrong_length_or_malformed_keys_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(IndexKeyError) as err:
        load_key(path, None)
    assert content.hex() not in str(err.value) or not content
    with pytest.raises(IndexKeyError, match=r"hex characters|not set or empty"):
        load_key(None, "K", {"K": content.decode("latin-1")})
    with pytest.raises(IndexKeyError, match="32 bytes"):
        IndexKey(b"\x00" * 16)


def test_repr_str_and_pickle_do_not_reveal_the_key(key: IndexKey) -> None:
    raw, hexed = key.reveal(), key.reveal().hex()
    for text in (repr(key), str(key), f"{key}", f"{key!r}", format(key), repr([key])):
        assert hexed not in text.lower() and raw.decode("latin-1") not in text
        assert key.key_id in text
    with pytest.raises(TypeError):
        pickle.dumps(key)
    assert parse_key(raw, "test") == key and parse_key(hexed.encode(), "test") == key
    assert generate_key() != key


def test_a_loose_key_file_mode_is_warned_about_without_the_key(
    tmp_path: Path, key: IndexKey, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "loose.key"
    path.write_bytes(key.reveal())
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert load_key(path, None) == key
    assert "chmod 600" in caplog.text and key.reveal().hex() not in caplog.text


# -- shards, search, replays ---------------------------------------------------------------------


def test_shards_roll_over_before_capacity_and_replays_overwrite_in_place(store: EncryptedStore) -> None:
    ids, vectors = _ids(180, "roll"), _vectors(180, 1)
    for lo in range(0, 180, 40):
        store.upsert(NAME, ids[lo : lo + 40], vectors[lo : lo + 40], _payloads(180, "first")[lo : lo + 40])
    shards = store.shards(NAME)
    assert [s.count for s in shards] == [50, 50, 50, 30]
    assert [s.sealed for s in shards] == [True, True, True, False]
    assert store.count(NAME) == 180
    # The same ids again, in other groupings, with new payloads: every point stays where it is.
    store.upsert(NAME, ids[::-1], vectors[::-1], _payloads(180, "second")[::-1])
    store.upsert(NAME, ids[60:70], vectors[60:70], _payloads(180, "second")[60:70])
    assert [s.count for s in store.shards(NAME)] == [50, 50, 50, 30] and store.count(NAME) == 180
    point = store.retrieve(NAME, [ids[75]])[0]
    assert point.payload == {"media_id": "second-75", "frame_index": 75}
    assert point.vector is not None and np.allclose(point.vector, vectors[75].astype(np.float32), atol=1e-3)


def test_search_across_shards_returns_the_exact_vector_first(store: EncryptedStore) -> None:
    ids, vectors = _ids(130, "search"), _vectors(130, 2)
    store.upsert(NAME, ids, vectors, _payloads(130, "m"))
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
    ids, vectors = _ids(30, "twice"), _vectors(30, 3)
    store.upsert(NAME, ids, vectors, _payloads(30, "a"))
    store.upsert(NAME, [i.upper() for i in ids], vectors, _payloads(30, "b"))  # same UUIDs, other spelling
    assert store.count(NAME) == 30 and len(store.shards(NAME)) == 1


def test_merge_hits_ranks_by_score_and_keeps_each_id_once() -> None:
    encrypted = [Hit("a", 0.9, {"s": "enc"}), Hit("b", 0.5, {}), Hit("c", 0.7, {})]
    qdrant = [Hit("a", 0.8, {"s": "qdrant"}), Hit("d", 0.7, {}), Hit("e", 0.95, {})]
    merged = merge_hits([encrypted, qdrant], limit=4)
    assert [h.id for h in merged] == ["e", "a", "c", "d"]  # c and d tie at 0.7: by id
    assert merged[1].payload == {"s": "enc"}  # the better-scored copy of a
    assert merge_hits([encrypted, qdrant], limit=0) == [] and len(merge_hits([qdrant], limit=10)) == 3


def test_background_training_runs_while_ingest_goes_on(tmp_path: Path, key: IndexKey) -> None:
    store = EncryptedStore(tmp_path / "enc", key, _enc(tmp_path))
    try:
        store.ensure_collection(NAME, DIM)
        n = 10_240
        ids, vectors = _ids(n + 4096, "train"), _vectors(n + 4096, 4)
        for lo in range(0, n, 1024):
            store.upsert(NAME, ids[lo : lo + 1024], vectors[lo : lo + 1024], _payloads(n + 4096, "t")[lo : lo + 1024])
        assert store.trainer.wait_started(60) == store.shards(NAME)[0].index
        during, lo = 0, n
        while store.trainer.current is not None and lo < n + 4096:
            store.upsert(NAME, ids[lo : lo + 128], vectors[lo : lo + 128], _payloads(n + 4096, "t")[lo : lo + 128])
            lo += 128
            during += store.trainer.current is not None  # this write finished while training ran
        assert during >= 1
        assert store.wait_for_training(120)
        [shard] = store.shards(NAME)
        assert shard.training_state == "trained" and shard.count == lo
        manifest = load_manifest(tmp_path / "enc")
        assert manifest is not None and manifest.collections[NAME].shards[0].trained_count >= n
        store.upsert(NAME, ids[:128], vectors[:128], _payloads(128, "t"))
        assert not store.trainer.busy()  # trained, and not grown enough to train again
        for i in (0, n - 1, n, lo - 1):  # before, at and after the training began
            assert store.search(NAME, vectors[i], limit=1, n_probes=10_000)[0].id == ids[i]
    finally:
        store.close()


def test_a_dimension_the_engine_cannot_train_stays_searchable(
    tmp_path: Path, key: IndexKey, caplog: pytest.LogCaptureFixture
) -> None:
    store = EncryptedStore(tmp_path / "enc", key, _enc(tmp_path))
    try:
        store.ensure_collection("odd", 48)
        ids, vectors = _ids(10_000, "odd"), _vectors(10_000, 5, dim=48)
        store.upsert("odd", ids, vectors, _payloads(10_000, "o"))
        assert store.wait_for_training(120)
        assert store.shards("odd")[0].training_state == "untrained"
        assert "stays untrained" in caplog.text and "divisible" in caplog.text
        manifest = load_manifest(tmp_path / "enc")
        assert manifest is not None and manifest.collections["odd"].shards[0].failed_count == 10_000
        store.upsert("odd", ids[:10], vectors[:10], _payloads(10, "again"))
        assert not store.trainer.busy()  # no retry before the shard has grown
        assert store.search("odd", vectors[9876], limit=1)[0].id == ids[9876]
    finally:
        store.close()


# -- keys against the store ----------------------------------------------------------------------


def test_a_wrong_key_fails_cleanly(tmp_path: Path, key: IndexKey, store: EncryptedStore) -> None:
    store.upsert(NAME, _ids(5, "k"), _vectors(5, 6), _payloads(5, "k"))
    store.close()
    other = generate_key()
    with pytest.raises(WrongKeyError, match="encrypted under key id") as err:
        EncryptedStore(tmp_path / "enc", other, _enc(tmp_path))
    assert other.reveal().hex() not in str(err.value) and key.reveal().hex() not in str(err.value)
    # The engine's own check, behind the manifest's: a shard opened with the wrong key.
    client = open_client(str(tmp_path / "enc" / "engine"), 0)
    with pytest.raises(WrongKeyError, match="does not open this index") as err:
        Shard.load(client, f"{NAME}__g1__s0001", other)
    assert other.reveal().hex() not in str(err.value)
    # A store whose manifest is gone refuses to bind a new one to whatever key comes first.
    (tmp_path / "enc" / "manifest.json").unlink()
    with pytest.raises(VectorStoreError, match="no manifest"):
        EncryptedStore(tmp_path / "enc", other, _enc(tmp_path))


def test_one_process_per_store_directory(tmp_path: Path, key: IndexKey, store: EncryptedStore) -> None:
    with pytest.raises(StoreLockedError):
        EncryptedStore(tmp_path / "enc", key, _enc(tmp_path))


def test_rekey_rebuilds_every_shard_under_the_new_key(tmp_path: Path, key: IndexKey, store: EncryptedStore) -> None:
    ids, vectors = _ids(120, "rekey"), _vectors(120, 7)
    store.upsert(NAME, ids, vectors, _payloads(120, "r"))
    store.save_offsets("sink", {("t", 0): 42})
    store.close()
    new = generate_key()
    report = rekey(tmp_path / "enc", key, new, _enc(tmp_path))
    assert (report.generation, report.shards, report.items, report.deleted) == (2, 3, 120, 3)
    with pytest.raises(WrongKeyError):
        EncryptedStore(tmp_path / "enc", key, _enc(tmp_path))
    reopened = EncryptedStore(tmp_path / "enc", new, _enc(tmp_path, capacity=50))
    try:
        assert [s.count for s in reopened.shards(NAME)] == [50, 50, 20]
        assert all("__g2__" in s.index for s in reopened.shards(NAME))
        hit = reopened.search(NAME, vectors[77], limit=1)[0]
        assert hit.id == ids[77] and hit.payload == {"media_id": "r-77", "frame_index": 77}
        assert reopened.load_offsets("sink") == {("t", 0): 42}
    finally:
        reopened.close()
    again = rekey(tmp_path / "enc", key, new, _enc(tmp_path))  # a rerun finds nothing left to do
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


# -- the sink without Kafka ----------------------------------------------------------------------


def _record(offset: int, media: str, *, dim: int = DIM, url: str = "", label: str | None = None) -> InputRecord:
    v = _vectors(2, offset, dim)
    rows = (
        VectorRow(point_id(MODEL, media, 0, "scene"), "scene", media, 0, 0.0),
        VectorRow(point_id(MODEL, media, 0, "object", 1), "object", media, 0, 0.0, 1, (0.1, 0.2, 0.3, 0.4), label),
    )
    batch = VectorBatch(MODEL, v, rows, url or f"http://127.0.0.1/{media}.jpg", "c1")
    return InputRecord("p.vectors", 0, offset, media.encode(), encode_vector_batch(batch))


def _sink(tmp_path: Path, key_file: Path) -> EncryptedSink:
    return EncryptedSink(Settings(data_dir=tmp_path), EncIndexSettings(key_file=key_file, shard_capacity=7))


def test_sink_writes_each_space_apart_records_offsets_and_replays_overwrite(tmp_path: Path, key: IndexKey) -> None:
    key_file = tmp_path / "index.key"
    write_key_file(key_file, key)
    sink = _sink(tmp_path, key_file)
    sink.start()
    try:
        records = [_record(i, f"m{i}") for i in range(10)]
        good, bad = sink.split(records)
        assert len(good) == 10 and not bad
        sink.write(good, {("p.vectors", 0): 10})
        sink.write(good[3:], {("p.vectors", 0): 10})  # a replay after a crash
        scene, obj = collection_name("c1", MODEL, "scene"), collection_name("c1", MODEL, "object")
        assert sink.store.collections() == sorted([scene, obj])
        assert (sink.store.count(scene), sink.store.count(obj)) == (10, 10)
        assert [s.count for s in sink.store.shards(scene)] == [7, 3]
        hit = sink.store.search(obj, _vectors(2, 4)[1], limit=1)[0]
        assert hit.id == point_id(MODEL, "m4", 0, "object", 1)
        assert hit.payload["box"] == pytest.approx([0.1, 0.2, 0.3, 0.4])
        assert hit.payload["space"] == "object" and hit.payload["source_url"] == "http://127.0.0.1/m4.jpg"
    finally:
        sink.close()
    reopened = _sink(tmp_path, key_file)
    reopened.start()
    try:
        assert reopened.load_offsets() == {("p.vectors", 0): 10}
    finally:
        reopened.close()


def test_sink_routes_garbage_nan_and_dimension_mismatch_to_failures(tmp_path: Path, key: IndexKey) -> None:
    key_file = tmp_path / "index.key"
    write_key_file(key_file, key)
    sink = _sink(tmp_path, key_file)
    sink.start()
    try:
        sink.write(sink.split([_record(0, "a")])[0], {("p.vectors", 0): 1})
        nan = _record(3, "n")
        batch = VectorBatch(
            MODEL, np.full((1, DIM), np.nan, np.float16), (VectorRow("x", "scene", "n", 0, 0.0),), "", "c1"
        )
        nan = InputRecord("p.vectors", 0, 3, b"n", encode_vector_batch(batch))
        garbage = InputRecord("p.vectors", 0, 1, b"k", b"not avro")
        records = [garbage, _record(2, "b", dim=64), nan, _record(4, "c"), _record(5, "d", dim=96)]
        good, bad = sink.split(records)
        assert [r.offset for r in good] == [4]
        assert [(r.offset, f.error_class) for r, f in bad] == [
            (1, "invalid_vector_batch"),
            (2, "dimension_mismatch"),
            (3, "invalid_vector"),
            (5, "dimension_mismatch"),
        ]
        assert "64-d vectors" in bad[1][1].reason and bad[1][1].media_id == "b"
    finally:
        sink.close()


# -- security ------------------------------------------------------------------------------------


def _key_forms(key: IndexKey) -> list[bytes]:
    raw = key.reveal()
    return [raw, raw.hex().encode(), raw.hex().upper().encode()]


def test_no_key_in_logs_errors_or_files_and_no_plaintext_payload_on_disk(
    tmp_path: Path, key: IndexKey, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    key_file = tmp_path / "secrets" / "index.key"
    key_file.parent.mkdir()
    write_key_file(key_file, key)
    secret_media = f"media-{uuid.uuid4().hex}"
    secret_url = f"http://127.0.0.1/private/{uuid.uuid4().hex}.jpg"
    secret_label = f"label-{uuid.uuid4().hex}"
    texts: list[str] = []
    sink = _sink(tmp_path, key_file)
    sink.start()
    try:
        records = [_record(i, f"{secret_media}-{i}", url=secret_url, label=secret_label) for i in range(20)]
        good, bad = sink.split([*records, InputRecord("p.vectors", 0, 99, b"k", b"junk")])
        sink.write(good, {("p.vectors", 0): 100})
        texts += [f.reason for _, f in bad] + [repr(sink.store), repr(sink.enc)]
        texts.append(repr(sink.store.search(collection_name("c1", MODEL, "scene"), _vectors(2, 3)[0], limit=3)))
    finally:
        sink.close()
    with pytest.raises(WrongKeyError) as err:
        EncryptedStore(tmp_path / "encindex", generate_key(), EncIndexSettings())
    texts += [str(err.value), repr(err.value)]
    client = open_client(str(tmp_path / "encindex" / "engine"), 0)  # the engine itself meets a wrong key
    with pytest.raises(WrongKeyError) as err:
        Shard.load(client, f"{collection_name('c1', MODEL, 'scene')}__g1__s0001", generate_key())
    texts += [str(err.value)]
    with pytest.raises(EngineError) as engine_err:  # an engine error on a call made with the right key
        Shard.load(client, f"{collection_name('c1', MODEL, 'scene')}__g1__s0001", key).query(
            np.ones(7, np.float32), 1, None
        )
    with pytest.raises(IndexKeyError) as key_err:
        IndexKey(key.reveal()[:31])
    out, errout = capfd.readouterr()
    texts += [str(engine_err.value), repr(engine_err.value), str(key_err.value), caplog.text, out, errout]
    assert "does not open this index" in str(err.value) and caplog.text  # the scans below read real text
    for text in texts:
        for form in _key_forms(key):
            assert form.decode("latin-1") not in text
    plaintext = [
        secret_media.encode(),
        secret_url.encode(),
        secret_label.encode(),
        point_id(MODEL, f"{secret_media}-3", 0, "scene").encode(),
    ]
    scanned = 0
    for root, _, files in os.walk(tmp_path / "encindex"):
        for f in files:
            data = (Path(root) / f).read_bytes()
            scanned += len(data)
            for needle in [*plaintext, *_key_forms(key)]:
                assert needle not in data, f"{needle[:12]!r}... found in {Path(root) / f}"
    assert scanned > 40 * DIM * 2  # at least the 40 fp16 vectors were on disk to scan

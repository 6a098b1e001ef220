"""The encrypted sink without Kafka, and what a full run leaves in logs, errors and files."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from consumers.sink_encrypted.sink import EncryptedSink, collection_name
from mediavec.settings import Settings
from schemas import VectorBatch, VectorRow, encode_vector_batch, point_id
from stores.encindex import EncIndexSettings, IndexKey, IndexKeyError, generate_key
from stores.encindex.keys import write_key_file
from stores.encindex.shards import EngineError, Shard, WrongKeyError, open_client
from stores.encindex.store import EncryptedStore
from streams.stage import InputRecord
from tests.unit.encindex.helpers import DIM, MODEL, unit_vectors

# -- the sink without Kafka ----------------------------------------------------------------------


def _record(offset: int, media: str, *, dim: int = DIM, url: str = "", label: str | None = None) -> InputRecord:
    v = unit_vectors(2, offset, dim)
    rows = (
        VectorRow(point_id(MODEL, media, 0, "scene"), "scene", media, 0, 0.0),
        VectorRow(point_id(MODEL, media, 0, "object", 1), "object", media, 0, 0.0, 1, (0.1, 0.2, 0.3, 0.4), label),
    )
    batch = VectorBatch(MODEL, v, rows, url or f"http://127.0.0.1/{media}.jpg", "c1")
    return InputRecord("p.vectors", 0, offset, media.encode(), encode_vector_batch(batch))


def _sink(tmp_path: Path, key_file: Path) -> EncryptedSink:
    return EncryptedSink(Settings(data_dir=tmp_path), EncIndexSettings(key_file=key_file, shard_capacity=7))


@pytest.fixture
def key_file(tmp_path: Path, key: IndexKey) -> Path:
    path = tmp_path / "index.key"
    write_key_file(path, key)
    return path


def test_sink_writes_each_space_apart_records_offsets_and_replays_overwrite(tmp_path: Path, key_file: Path) -> None:
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
        hit = sink.store.search(obj, unit_vectors(2, 4)[1], limit=1)[0]
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


def test_sink_routes_garbage_nan_and_dimension_mismatch_to_failures(tmp_path: Path, key_file: Path) -> None:
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
            (3, "invalid_vector_batch"),  # NaN: refused by the decoder, for every sink
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
        texts.append(repr(sink.store.search(collection_name("c1", MODEL, "scene"), unit_vectors(2, 3)[0], limit=3)))
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

"""Real photos through fetch -> embed -> sink-qdrant, each stage its own process, over the real broker.

Exactly the good URLs land in Qdrant (count and ids), every planted bad input is in the DLQ with
its reason, each stored vector equals the model's own output for that image (cosine >= 0.999),
the embed worker survives a SIGKILL mid-run, and the canary on 127.0.0.2 is never reached.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from devstack.mediaserver import Canary, MediaServer
from devstack.samples import sample_images
from media.decode import decode_image
from mediavec.progress import RunTracker
from mediavec.publish import new_run_id, publish
from mediavec.settings import Settings
from schemas import MediaRequest, decode_dead_letter, point_id
from schemas.collections import collection_for
from stores.vectorstore import open_store
from stores.vectorstore.base import StoredPoint
from streams.admin import ensure_topics
from streams.kafka import producer
from streams.topics import topics
from tests.e2e.corpus import Corpus, build_corpus
from tests.kafkautil import read_topic, wait_sinks_caught_up

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

STAGES = ("fetch", "embed", "sink-qdrant", "sink-postgres", "sink-encrypted")


class Workers:
    """The three stages as separate OS processes, as in production."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.env = {**os.environ, **settings.to_env()}
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, stage: str) -> None:
        log = (self.log_dir / f"{stage}.log").open("ab")
        self.procs[stage] = subprocess.Popen(
            [sys.executable, "-m", "mediavec.cli", "run", stage, "--instance", "e2e"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill(self, stage: str) -> None:
        self.procs[stage].send_signal(signal.SIGKILL)
        self.procs[stage].wait(30)

    def check_alive(self) -> None:
        dead = {s: p.returncode for s, p in self.procs.items() if p.poll() is not None}
        if dead:
            logs = {s: (self.log_dir / f"{s}.log").read_text()[-3000:] for s in dead}
            raise AssertionError(f"workers exited: {dead}\n{logs}")

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[MediaServer, Canary, Path]]:
    root = tmp_path / "media"
    root.mkdir()
    with MediaServer(root) as server, Canary() as canary:
        yield server, canary, root


def _requests(corpus: Corpus, run_id: str) -> list[MediaRequest]:
    urls = {**corpus.good, **{m: u for m, (u, _) in corpus.bad.items()}}
    return [
        MediaRequest(media_id=m, url=u, collection="e2e", run_id=run_id, published_at=time.time())
        for m, u in sorted(urls.items())
    ]


def _publish_invalid(settings: Settings, corpus: Corpus, run_id: str) -> None:
    p = producer(settings)
    for media, raw in corpus.invalid_json.items():
        p.produce(topics(settings).requests.name, key=media.encode(), value=raw.replace(b"RUN", run_id.encode()))
    assert p.flush(30) == 0


def test_images_end_to_end_with_bad_inputs_retries_and_an_embed_crash(
    e2e_settings: Settings, served: tuple[MediaServer, Canary, Path], tmp_path: Path
) -> None:
    settings = e2e_settings
    server, canary, root = served
    corpus = build_corpus(root, sample_images(tmp_path / "samples"), server, canary)
    total = len(corpus.good) + len(corpus.bad) + len(corpus.invalid_json)
    assert len(corpus.good) >= 200 and (total - len(corpus.good)) / total >= 0.10
    ensure_topics(settings)
    workers = Workers(settings, tmp_path)
    run_id = new_run_id()
    tracker = RunTracker(settings, run_id, total)
    try:
        for stage in STAGES:
            workers.start(stage)
        publish(settings, _requests(corpus, run_id), show_progress=False)
        _publish_invalid(settings, corpus, run_id)
        killed = False
        deadline = time.monotonic() + 900
        while tracker.poll(1.0).done < total:
            workers.check_alive()
            assert time.monotonic() < deadline, f"stuck at {tracker.progress}"
            if not killed and tracker.progress.stored >= 40:
                workers.kill("embed")  # SIGKILL mid-run, then a restart with the same instance id
                workers.start("embed")
                killed = True
        assert killed, "the run ended before the embed worker could be killed"
        wait_sinks_caught_up(settings, [s for s in STAGES if s.startswith("sink-")])
    finally:
        tracker.close()
        workers.stop()

    _assert_dlq(settings, corpus)
    _assert_stores(settings, corpus)
    _assert_no_key_or_plaintext_leaks(settings, corpus, tmp_path)
    assert canary.hits == 0, "a refused redirect reached 127.0.0.2"
    for media, path in corpus.flaky.items():
        assert server.hits(path) == 2, f"{media}: expected one 500 then one success"


def _assert_no_key_or_plaintext_leaks(settings: Settings, corpus: Corpus, log_dir: Path) -> None:
    """The index key is in no worker log, no dead letter and no data file; the encrypted index
    holds no payload in plaintext."""
    from stores.encindex.keys import load_key

    assert settings.encindex.key_file is not None
    raw = load_key(settings.encindex.key_file, None).reveal()
    needles = [raw, raw.hex().encode(), raw.hex().upper().encode()]
    logs = b"".join(p.read_bytes() for p in log_dir.glob("*.log"))
    assert logs, "no worker logs to scan"
    letters = b"".join(m.value for m in read_topic(settings, topics(settings).dlq.name))
    enc_dir = settings.encindex.path or settings.data_dir / "encindex"
    files = [p for p in enc_dir.rglob("*") if p.is_file()]
    assert files, "no encrypted index files to scan"
    for needle in needles:
        assert needle not in logs and needle not in letters
        assert not [p for p in files if needle in p.read_bytes()]
    sample_url, sample_media = next(iter(corpus.good.values())).encode(), next(iter(corpus.good)).encode()
    assert not [p for p in files if sample_url in p.read_bytes() or sample_media in p.read_bytes()]
    # Lines about an event name it: a planted 404's dead-letter line carries its media id and offset.
    fetch_log = (log_dir / "fetch.log").read_text()
    requests = topics(settings).requests.name
    assert re.search(rf"-> DLQ http_404: .* \[media=bad-404-0 src={re.escape(requests)}/\d+@\d+\]", fetch_log)


def _assert_dlq(settings: Settings, corpus: Corpus) -> None:
    letters = [decode_dead_letter(m.value) for m in read_topic(settings, topics(settings).dlq.name)]
    got = {d.media_id: d.error_class for d in letters}
    expected = {m: cls for m, (_, cls) in corpus.bad.items()} | {m: "invalid_request" for m in corpus.invalid_json}
    assert got == expected
    assert len(letters) == len(expected), "a bad input reached the DLQ twice"
    for d in letters:
        assert d.stage == "fetch" and d.reason and d.source_topic == topics(settings).requests.name
        assert d.original_value and d.source_offset >= 0


def _assert_stores(settings: Settings, corpus: Corpus) -> None:
    """Qdrant, the encrypted index and PostgreSQL each hold exactly the good media, once."""
    expected = _assert_store(settings, corpus)
    _assert_encrypted(settings, expected)
    _assert_postgres(settings, expected)


def _assert_encrypted(settings: Settings, expected: dict[str, tuple[str, np.ndarray]]) -> None:
    from stores.encindex import open_encrypted_store

    model = next(iter(expected.values()))[0]
    name = f"{collection_for('e2e', model)}__scene"
    ids = sorted(expected)
    with open_encrypted_store(settings) as enc:
        assert enc.collections() == [name]
        assert enc.count(name) == len(ids)
        points = enc.retrieve(name, ids, with_vectors=True)
    assert sorted(p.id for p in points) == ids
    for p in points:
        assert p.vector is not None
        want = expected[p.id][1]
        cos = float(np.dot(p.vector, want) / np.linalg.norm(p.vector) / np.linalg.norm(want))
        assert cos >= 0.999, f"encrypted vector of {p.id}: cosine {cos:.5f}"


def _assert_postgres(settings: Settings, expected: dict[str, tuple[str, np.ndarray]]) -> None:
    from stores.metadb import connect

    with connect(settings) as conn:
        rows = conn.execute("SELECT point_id::text, media_id, space, collection FROM frame_metadata").fetchall()
    assert len(rows) == len(expected), "a row is missing or duplicated"
    assert {r[0] for r in rows} == set(expected)
    assert all(space == "scene" and coll == "e2e" for _, _, space, coll in rows)


def stored_points(settings: Settings, corpus: Corpus, model: str) -> tuple[dict[str, str], list[StoredPoint]]:
    """The scene point of every good media (point id -> media id, the points): exactly those, once."""
    ids = {point_id(model, m, 0, "scene", 0): m for m in corpus.good}
    name = collection_for("e2e", model)
    with open_store(settings) as store:
        assert store.collections() == [name]
        assert store.count(name) == len(corpus.good)
        points = store.retrieve(name, sorted(ids), with_vectors=True)
    assert {p.id for p in points} == set(ids)
    return ids, points


def _assert_store(settings: Settings, corpus: Corpus) -> dict[str, tuple[str, np.ndarray]]:
    from models.clip import ClipEmbedder

    embedder = ClipEmbedder.load(settings.model)
    ids, points = stored_points(settings, corpus, embedder.model_id)
    import io

    from PIL import Image

    media = [ids[p.id] for p in points]
    frames = [decode_image(corpus.files[m].read_bytes(), settings.fetch).jpeg for m in media]
    from models.bundle import stored as stored_width

    full = embedder.embed_images([Image.open(io.BytesIO(j)).convert("RGB") for j in frames])
    expected = stored_width(full, settings.model.store_dim).astype(np.float32)  # the Matryoshka stored width
    assert all(p.vector is not None for p in points)
    stored = np.stack([np.asarray(p.vector) for p in points]).astype(np.float32)
    cos = (expected * stored).sum(1) / np.linalg.norm(expected, axis=1) / np.linalg.norm(stored, axis=1)
    assert cos.min() >= 0.999, f"worst cosine {cos.min():.5f} for {media[int(cos.argmin())]}"
    for p in points:
        assert p.payload["media_id"] == ids[p.id] and p.payload["source_url"] == corpus.good[ids[p.id]]
        assert p.payload["model"] == embedder.model_id and p.payload["collection"] == "e2e"
    return {p.id: (embedder.model_id, expected[i]) for i, p in enumerate(points)}

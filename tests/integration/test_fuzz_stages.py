"""Every stage survives hostile values on its input topic (hypothesis, through the real broker).

Each stage's worker is built as ``mediavec run <stage>`` builds it (``mediavec.workers.build``) and
runs for the whole test; hypothesis publishes examples of hostile records (tests/hostile.py lists
the classes) mixed with good events. After every example the stage's group has consumed
everything, the worker still runs, and every record its own decoder refuses is in the DLQ exactly
once, with a reason. At the end, every good event is stored.

``MEDIAVEC_FUZZ_EXAMPLES`` sets the examples per stage (default 8; CI runs the default).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from mediavec import workers
from mediavec.settings import Settings
from schemas import SchemaError, decode_dead_letter, decode_frame, decode_request, decode_vector_batch
from schemas.codec import encode_frame, encode_request, encode_vector_batch
from schemas.models import MediaRequest
from streams.admin import ensure_topics
from streams.kafka import group_id, producer
from streams.topics import topics
from tests import hostile
from tests.hostile import Hostile
from tests.kafkautil import ThreadWorker, group_caught_up, read_topic, wait_for

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("MEDIAVEC_FUZZ_EXAMPLES", "8"))
FUZZ = hsettings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the checkout; a failure prints its example
    suppress_health_check=list(HealthCheck),
)


@dataclass
class Published:
    partition: int
    offset: int
    hostile: Hostile


@dataclass
class Case:
    stage: str
    input: str  # topic key
    decode: Callable[[bytes], object]  # the stage's own decoder: SchemaError means bad
    strategy: st.SearchStrategy[Hostile]
    good: Callable[[str], tuple[bytes, bytes]]  # media id -> (key, value)


class Fuzzer:
    """Publishes hostile and good records to one stage's input and checks what became of them."""

    def __init__(self, settings: Settings, case: Case) -> None:
        self.settings = settings
        self.case = case
        self.topic = topics(settings).by_name(case.input).name
        self.producer = producer(settings)
        self.published: list[Published] = []
        self.good_ids: list[str] = []

    def publish(self, records: list[Hostile]) -> None:
        for h in records:
            self._produce(h.key, h.value, list(h.headers), h)
        media = hostile.fresh_id("good")
        key, value = self.case.good(media)
        self._produce(key, value, [], None)
        self.good_ids.append(media)
        assert self.producer.flush(60) == 0

    def _produce(self, key: bytes | None, value: bytes | None, headers: list, h: Hostile | None) -> None:
        def delivered(err: object, msg: object) -> None:
            assert err is None, err
            if h is not None:
                self.published.append(Published(msg.partition(), msg.offset(), h))  # type: ignore[attr-defined]

        self.producer.produce(self.topic, key=key, value=value, headers=headers or None, on_delivery=delivered)

    def refused(self, h: Hostile) -> bool:
        try:
            self.case.decode(h.value or b"")
        except SchemaError:
            return True
        return False

    def check_dead_letters(self) -> None:
        letters = [decode_dead_letter(m.value) for m in read_topic(self.settings, topics(self.settings).dlq.name)]
        mine = [d for d in letters if d.source_topic == self.topic]
        seen = Counter((d.source_partition, d.source_offset) for d in mine)
        for d in mine:
            assert d.stage == self.case.stage and d.error_class and d.reason, d
            assert len(d.reason) < 1000, "a reason stays readable"
        for p in self.published:
            count = seen[(p.partition, p.offset)]
            if self.refused(p.hostile):
                assert count == 1, f"{p.hostile.kind} record at {p.partition}@{p.offset}: {count} dead letters"
            else:
                assert count <= 1, f"{p.hostile.kind} record at {p.partition}@{p.offset}: {count} dead letters"


def _fuzz(settings: Settings, case: Case, instance: str) -> Fuzzer:
    """Run the stage's worker while hypothesis publishes examples; returns what was published."""
    ensure_topics(settings)
    fuzzer = Fuzzer(settings, case)
    group = group_id(settings, case.stage)
    worker = ThreadWorker(workers.build(case.stage, settings, instance=instance))
    with worker:

        @given(st.lists(case.strategy, min_size=1, max_size=4))
        @FUZZ
        def example(records: list[Hostile]) -> None:
            fuzzer.publish(records)
            wait_for(lambda: group_caught_up(settings, group, fuzzer.topic), 180, f"{case.stage} to consume all")
            assert worker.thread.is_alive() and worker.error is None, f"the {case.stage} worker exited"
            fuzzer.check_dead_letters()

        example()
    return fuzzer


# -- the stages -----------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    from devstack.mediaserver import MediaServer

    root = tmp_path / "media"
    root.mkdir()
    with MediaServer(root) as server:
        yield root, server.url("")


def test_fetch_survives_hostile_requests(settings: Settings, served: tuple[Path, str]) -> None:
    root, base = served

    def good(media: str) -> tuple[bytes, bytes]:
        (root / f"{media}.jpg").write_bytes(hostile.jpeg(abs(hash(media)) % 10_000))
        req = MediaRequest(media_id=media, url=f"{base}{media}.jpg", collection="fuzz", reprocess=True)
        return media.encode(), encode_request(req)

    case = Case("fetch", "requests", decode_request, hostile.hostile_requests(), good)
    fuzzer = _fuzz(settings, case, "fuzz-fetch")
    frames = {decode_frame(m.value).media_id for m in read_topic(settings, topics(settings).frames.name)}
    assert set(fuzzer.good_ids) <= frames, "every good request became a frame"


def test_embed_survives_hostile_frames(settings: Settings) -> None:
    def good(media: str) -> tuple[bytes, bytes]:
        return media.encode(), encode_frame(hostile.good_frame(media, seed=abs(hash(media)) % 10_000))

    case = Case("embed", "frames", _decode_frame_and_image, hostile.hostile_frames(), good)
    fuzzer = _fuzz(settings, case, "fuzz-embed")
    vectors = read_topic(settings, topics(settings).vectors.name)
    stored = {decode_vector_batch(m.value).rows[0].media_id for m in vectors}
    assert set(fuzzer.good_ids) <= stored, "every good frame became vectors"


def _decode_frame_and_image(value: bytes) -> object:
    """What the embed stage refuses: an undecodable event, or a frame whose JPEG does not decode."""
    from consumers.embed.stage import decode_image

    frame = decode_frame(value)
    try:
        return decode_image(frame.jpeg)
    except Exception as exc:
        raise SchemaError(str(exc)) from exc


def _good_batch(media: str) -> tuple[bytes, bytes]:
    return media.encode(), encode_vector_batch(hostile.good_batch(media, seed=abs(hash(media)) % 10_000))


def test_sink_qdrant_survives_hostile_vector_batches(settings: Settings) -> None:
    from schemas.collections import collection_for
    from stores.vectorstore import open_store

    case = Case("sink-qdrant", "vectors", decode_vector_batch, hostile.hostile_vectors(), _good_batch)
    fuzzer = _fuzz(settings, case, "fuzz-qdrant")
    with open_store(settings) as store:
        name = collection_for("fuzz", hostile.MODEL)
        ids = [r.point_id for m in fuzzer.good_ids for r in hostile.good_batch(m).rows]
        assert len(store.retrieve(name, ids, with_vectors=False)) == len(ids), "every good vector is stored"


def test_sink_postgres_survives_hostile_vector_batches(settings: Settings) -> None:
    from stores.metadb.db import connect

    case = Case("sink-postgres", "vectors", decode_vector_batch, hostile.hostile_vectors(), _good_batch)
    fuzzer = _fuzz(settings, case, "fuzz-postgres")
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT count(DISTINCT media_id) FROM frame_metadata WHERE media_id = ANY(%s)", (fuzzer.good_ids,)
        ).fetchone()
    assert rows is not None and rows[0] == len(fuzzer.good_ids), "every good batch has its rows"


def test_sink_encrypted_survives_hostile_vector_batches(settings: Settings, tmp_path: Path) -> None:
    from consumers.sink_encrypted.sink import collection_name
    from stores.encindex import open_encrypted_store
    from stores.encindex.config import encindex_settings
    from stores.encindex.keys import generate_key, write_key_file

    key_file = tmp_path / "index.key"
    write_key_file(key_file, generate_key())
    enc = settings.encindex.model_copy(update={"key_file": key_file})
    settings = settings.model_copy(update={"encindex": enc})
    case = Case("sink-encrypted", "vectors", decode_vector_batch, hostile.hostile_vectors(), _good_batch)
    fuzzer = _fuzz(settings, case, "fuzz-encrypted")
    store = open_encrypted_store(settings, encindex_settings(settings))
    try:
        # A mutated batch may still decode into a valid one (then it is stored, as it should be):
        # look the good points up rather than count the collection.
        name = collection_name("fuzz", hostile.MODEL, "scene")
        ids = [r.point_id for m in fuzzer.good_ids for r in hostile.good_batch(m).rows if r.space == "scene"]
        assert ids and len(store.retrieve(name, ids, with_vectors=False)) == len(ids), "every good vector is stored"
    finally:
        store.close()

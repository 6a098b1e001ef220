"""The fetch worker's pipelined runner: a slow download holds back only the commits it must.

A gated route on the loopback media server keeps one download open until the test opens the
gate, so what the runner does meanwhile is observed, not timed: other partitions commit, later
downloads of the same partition run (but do not commit past the open one), at most
``max_in_flight`` requests are started, finished requests queued behind the open one do not take
the running slots another partition needs, and a worker stopped with work in flight leaves it to
the next one, which commits every request exactly once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from confluent_kafka import Consumer, Producer, TopicPartition
from PIL import Image

from consumers.fetch.stage import FetchStage
from devstack.mediaserver import MediaServer
from mediavec.settings import Settings
from schemas import MediaRequest, decode_frame
from schemas.codec import encode_request
from streams.admin import ensure_topics
from streams.kafka import group_id
from streams.pipelined import PipelinedRunner
from streams.topics import topics
from tests.kafkautil import ThreadWorker, read_topic, wait_for

pytestmark = pytest.mark.integration


class GatedServer(MediaServer):
    """``/gated/<name>`` answers only once :attr:`gate` is set."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = threading.Event()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/gated/{name:.+}", self._gated)

    async def _gated(self, request: web.Request) -> web.Response:
        while not self.gate.is_set():
            await asyncio.sleep(0.02)
        return await self._whole_file(request)


def _photos(root: Path, names: list[str]) -> None:
    rng = np.random.default_rng(7)
    root.mkdir(parents=True, exist_ok=True)
    for name in names:  # distinct bytes each, so no request is a duplicate of another
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / f"{name}.png")


def _two_partitions(settings: Settings) -> Settings:
    t = settings.topics.model_copy(update={"requests_partitions": 2})
    return settings.model_copy(update={"topics": t})


def _produce(settings: Settings, requests: list[tuple[int, MediaRequest]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    name = topics(settings).requests.name
    for partition, req in requests:
        producer.produce(name, key=req.media_id.encode(), value=encode_request(req), partition=partition)
    assert producer.flush(30) == 0


def _stored(settings: Settings) -> list[str]:
    return [decode_frame(m.value).media_id for m in read_topic(settings, topics(settings).frames.name)]


def _runner(settings: Settings, max_in_flight: int, instance: str) -> PipelinedRunner:
    stage = FetchStage(settings)
    return PipelinedRunner(
        settings, stage, max_in_flight=max_in_flight, commit_size=4, commit_interval_s=0.1, instance=instance
    )


def _committed_offsets(settings: Settings, partitions: int) -> list[int]:
    conf = {"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": group_id(settings, "fetch")}
    consumer = Consumer(conf)
    try:
        name = topics(settings).requests.name
        tps = consumer.committed([TopicPartition(name, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in tps]
    finally:
        consumer.close()


def test_a_slow_download_holds_only_its_own_partitions_commit(settings: Settings, tmp_path: Path) -> None:
    settings = _two_partitions(settings)
    ensure_topics(settings)
    names = ["slow", "a0", "a1", "a2", "b0", "b1", "b2"]
    _photos(tmp_path / "media", names)
    with GatedServer(tmp_path / "media") as server:
        slow = (0, MediaRequest(media_id="slow", url=server.url("gated/slow.png")))
        behind = [(0, MediaRequest(media_id=n, url=server.url(f"{n}.png"))) for n in ("a0", "a1", "a2")]
        other = [(1, MediaRequest(media_id=n, url=server.url(f"{n}.png"))) for n in ("b0", "b1", "b2")]
        _produce(settings, [slow, *behind, *other])
        with ThreadWorker(_runner(settings, 16, "pipe")):
            wait_for(lambda: sorted(_stored(settings)) == ["b0", "b1", "b2"], 60, "the other partition's frames")
            wait_for(lambda: all(server.hits(f"/{n}.png") == 1 for n in ("a0", "a1", "a2")), 30, "downloads behind")
            assert sorted(_stored(settings)) == ["b0", "b1", "b2"], "nothing of partition 0 commits past 'slow'"
            first, second = _committed_offsets(settings, 2)
            assert first < 0 and second == 3, (first, second)  # partition 0: no commit yet
            server.gate.set()
            wait_for(lambda: len(_stored(settings)) == len(names), 60, "every frame")
        assert sorted(_stored(settings)) == sorted(names), "each request stored exactly once"
        assert _committed_offsets(settings, 2) == [4, 3]
        assert all(server.hits(f"/{n}.png") == 1 for n in names if n != "slow"), "nothing downloaded twice"


def test_a_partition_stuck_behind_a_slow_download_does_not_starve_the_others(
    settings: Settings, tmp_path: Path
) -> None:
    settings = _two_partitions(settings)
    ensure_topics(settings)
    stuck = ["slow", "a0", "a1", "a2", "a3", "a4"]
    other = ["b0", "b1", "b2", "b3"]
    _photos(tmp_path / "media", stuck + other)
    with GatedServer(tmp_path / "media") as server:
        first = [(0, MediaRequest(media_id="slow", url=server.url("gated/slow.png")))]
        first += [(0, MediaRequest(media_id=n, url=server.url(f"{n}.png"))) for n in stuck[1:]]
        _produce(settings, first)
        with ThreadWorker(_runner(settings, 3, "fair")):
            # partition 0 fills its share: the open download and two finished ones behind it
            wait_for(lambda: server.hits("/a0.png") == 1 and server.hits("/a1.png") == 1, 60, "a0 and a1")
            time.sleep(0.5)  # a window in which a runner without a per-partition share would start a2
            assert server.hits("/a2.png") == 0, "partition 0 holds at most max_in_flight uncommitted"
            # only now does partition 1 get work: every slot it could use is held by partition 0
            _produce(settings, [(1, MediaRequest(media_id=n, url=server.url(f"{n}.png"))) for n in other])
            wait_for(lambda: sorted(_stored(settings)) == other, 60, "partition 1 while partition 0 is stuck")
            assert server.hits("/a2.png") == 0, "partition 0 still holds its share"
            held, free = _committed_offsets(settings, 2)
            assert held < 0 and free == 4, (held, free)  # partition 0: no commit past 'slow' yet
            server.gate.set()
            wait_for(lambda: len(_stored(settings)) == len(stuck + other), 60, "every frame")
        assert sorted(_stored(settings)) == sorted(stuck + other), "each request stored exactly once"
        assert _committed_offsets(settings, 2) == [6, 4]
        assert all(server.hits(f"/{n}.png") == 1 for n in stuck[1:] + other), "nothing downloaded twice"


def test_in_flight_is_bounded_and_a_stopped_worker_leaves_its_work_to_the_next(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings)
    names = ["slow"] + [f"n{i}" for i in range(9)]
    _photos(tmp_path / "media", names)
    partition = 0  # one partition: everything queues behind 'slow'
    with GatedServer(tmp_path / "media") as server:
        reqs = [(partition, MediaRequest(media_id="slow", url=server.url("gated/slow.png")))]
        reqs += [(partition, MediaRequest(media_id=n, url=server.url(f"{n}.png"))) for n in names[1:]]
        _produce(settings, reqs)
        with ThreadWorker(_runner(settings, 3, "bounded")):
            wait_for(lambda: len(server.request_log) >= 3, 60, "three requests started")
            wait_for(lambda: server.hits("/n1.png") == 1, 30, "the third request")
            time.sleep(1.0)  # a window in which an unbounded runner would start n2, n3, ...
            started = set(server.request_log)
            assert started == {"/gated/slow.png", "/n0.png", "/n1.png"}, started
        assert _stored(settings) == [], "nothing committed past the open download"
        server.gate.set()
        with ThreadWorker(_runner(settings, 3, "bounded")):
            wait_for(lambda: len(_stored(settings)) == len(names), 90, "every frame after the restart")
    assert sorted(_stored(settings)) == sorted(names), "each request stored exactly once"

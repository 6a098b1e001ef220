"""Search answers while a sink-qdrant worker holds the embedded store and keeps ingesting.

The worker is a real `mediavec run sink-qdrant` process (LocalWorkers, as the CLI and the demo
start it) reading a real broker; the searches are the library call `mediavec search` makes and the
command itself. Before, the search failed with "vector store ... is already open".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from consumers.registry import SINK_QDRANT
from mediavec.localworkers import LocalWorkers
from mediavec.query_models import QueryModels
from mediavec.search import search
from mediavec.settings import Settings
from schemas import encode_vector_batch
from stores.vectorstore import UnknownCollectionError
from streams.admin import ensure_topics
from streams.kafka import producer
from streams.topics import topics
from tests import hostile
from tests.kafkautil import wait_for

pytestmark = pytest.mark.integration

COLLECTION = "live"


def _publish(settings: Settings, model: str, media: list[str]) -> None:
    p = producer(settings)
    topic = topics(settings).vectors.name
    for m in media:
        batch = hostile.good_batch(m, dim=256, seed=len(m), model=model, collection=COLLECTION)
        p.produce(topic, key=m.encode(), value=encode_vector_batch(batch))
    assert p.flush(30) == 0


def test_search_answers_while_the_sink_ingests(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings)
    models = QueryModels(settings)
    model = models.model_id("vision")  # the random-weights model the search embeds queries with

    def scene_hits() -> set[str]:
        try:
            hits = search(settings, text="a bus", collection=COLLECTION, limit=100, models=models)
        except UnknownCollectionError:  # nothing stored yet
            return set()
        return {h.payload["media_id"] for h in hits}

    workers = LocalWorkers(settings, tmp_path / "logs", "live").start([SINK_QDRANT.name])
    try:
        first = [f"m{i}" for i in range(5)]
        _publish(settings, model, first)
        wait_for(lambda: scene_hits() == set(first), 120, "the first media to be searchable")
        assert not workers.dead(), "the sink still runs: the search read through it"

        more = [f"n{i}" for i in range(7)]
        _publish(settings, model, more)  # ingest goes on; the same reader sees it
        wait_for(lambda: scene_hits() == set(first + more), 120, "the later media to be searchable")

        env = {**os.environ, **settings.to_env()}
        cmd = [sys.executable, "-m", "mediavec.cli", "search", "--text", "a bus", "--collection", COLLECTION]
        done = subprocess.run([*cmd, "--limit", "100", "--json"], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert {h["payload"]["media_id"] for h in json.loads(done.stdout)} == set(first + more)
        assert not workers.dead()
    finally:
        workers.stop()

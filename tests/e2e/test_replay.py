"""Replay a window into a new version with another model while ingest runs, switch the alias, search."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from devstack.mediaserver import MediaServer
from devstack.samples import sample_images
from mediavec.aliases import alias_book
from mediavec.cli import _drop_version
from mediavec.localworkers import LocalWorkers, follow
from mediavec.progress import RunTracker
from mediavec.publish import publish
from mediavec.replay import resolve_window, run_replay
from mediavec.search import search
from mediavec.settings import Settings
from schemas import MediaRequest
from schemas.collections import collection_for
from stores.vectorstore import open_store
from streams.admin import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

V1_MODEL = "open_clip/ViT-B-32/random-seed0"
V2_MODEL = "open_clip/ViT-B-16/random-seed0"


def _requests(server: MediaServer, names: list[str], run_id: str) -> list[MediaRequest]:
    return [
        MediaRequest(
            media_id=f"p-{Path(n).stem}", url=server.url(n), collection="shop", run_id=run_id, published_at=time.time()
        )
        for n in names
    ]


def test_replay_into_a_new_version_then_switch_and_switch_back(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    photos = sample_images(tmp_path / "samples")
    for p in photos:
        shutil.copy(p, root / p.name)
    names = [p.name for p in photos]
    ensure_topics(settings)
    live = LocalWorkers(settings, tmp_path / "logs", "live").start(["fetch", "embed", "sink-qdrant"])
    try:
        with MediaServer(root) as server:
            first = RunTracker(settings, "r1", 5)
            publish(settings, _requests(server, names[:5], "r1"), show_progress=False)
            follow(first, live, timeout_s=300)
            first.close()
            window = resolve_window(settings)  # from the beginning to now: the first five
            later = RunTracker(settings, "r2", len(names) - 5)
            publish(settings, _requests(server, names[5:], "r2"), show_progress=False)  # ingest goes on
            run_replay(
                settings,
                window,
                target="shop-v2",
                source="shop",
                model_update={"arch": "ViT-B-16"},
                log_dir=tmp_path / "logs",
            )
            follow(later, live, timeout_s=300)
            later.close()
    finally:
        live.stop()

    v1, v2 = collection_for("shop", V1_MODEL), collection_for("shop-v2", V2_MODEL)
    with open_store(settings) as store:
        assert store.count(v1) == len(names)
        assert store.count(v2) == 5  # exactly the window, embedded by the other model
    book = alias_book(settings)
    assert book.switch("shop", v2) is None
    hits = search(settings, image=photos[0], collection="shop", limit=3)
    assert hits[0].payload["media_id"] == f"p-{photos[0].stem}" and hits[0].score > 0.99
    assert {h.payload["collection"] for h in hits} == {"shop-v2"} and hits[0].payload["model"] == V2_MODEL
    assert _drop_version(settings, "shop-v2") == 1  # refused while the alias points at it
    assert book.switch("shop", v1) == v2  # and back, atomically
    hits = search(settings, image=photos[6], collection="shop", limit=3)
    assert hits[0].payload["media_id"] == f"p-{photos[6].stem}" and hits[0].payload["model"] == V1_MODEL
    assert _drop_version(settings, "shop-v2") == 0
    with open_store(settings) as store:
        assert v2 not in store.collections() and store.count(v1) == len(names)

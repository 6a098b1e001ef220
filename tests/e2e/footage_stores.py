"""Checks of video in every store: what the embed stage published is in Qdrant, the encrypted
index and PostgreSQL, each point once, per frame with its timestamp, and the scene vectors are the
vision model's own output for the frame.

Used by tests/e2e/test_footage.py after its five worker processes have drained.
"""

from __future__ import annotations

import functools
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mediavec.settings import Settings
from schemas import Frame, VectorBatch
from schemas.collections import collection_for
from streams.kafka import group_id
from streams.topics import topics
from tests.kafkautil import group_caught_up, wait_for

MIN_COSINE = 0.999


@dataclass(frozen=True)
class Published:
    """One row the embed stage published: where it belongs and its vector (float32)."""

    collection: str  # the Qdrant collection (request collection x model)
    space: str
    media_id: str
    frame_index: int
    timestamp_s: float
    vector: np.ndarray


def wait_all_stages(settings: Settings, timeout_s: float = 600) -> None:
    """Until every stage's group has consumed its input (fetch, embed, the three sinks)."""
    t = topics(settings)
    # embed reads frames written in fetch's transactions: its committed offsets stop at the markers.
    for stage, topic, txn in (
        ("fetch", t.requests, False),
        ("embed", t.frames, True),
        ("sink-qdrant", t.vectors, False),
        ("sink-postgres", t.vectors, False),
        ("sink-encrypted", t.vectors, False),
    ):
        group = group_id(settings, stage)
        wait_for(functools.partial(group_caught_up, settings, group, topic.name, transactional=txn), timeout_s, stage)


def published(batches: Iterable[VectorBatch]) -> dict[str, Published]:
    """Every row of the vectors topic (committed) by point id; each point is published once."""
    out: dict[str, Published] = {}
    for b in batches:
        name = collection_for(b.collection, b.model)
        for row, vector in zip(b.rows, b.vectors, strict=True):
            assert row.point_id not in out, f"point {row.point_id} published twice"
            out[row.point_id] = Published(
                name, row.space, row.media_id, row.frame_index, row.timestamp_s, vector.astype(np.float32)
            )
    return out


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _by(points: dict[str, Published], key: str) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for pid, p in points.items():
        groups[p.collection if key == "collection" else f"{p.collection}__{p.space}"].append(pid)
    return groups


def assert_qdrant(settings: Settings, points: dict[str, Published]) -> None:
    from stores.vectorstore import open_store

    groups = _by(points, "collection")
    with open_store(settings) as store:
        assert sorted(store.collections()) == sorted(groups)
        for name, ids in groups.items():
            assert store.count(name) == len(ids), f"{name}: a point is missing or extra"
            for got in store.retrieve(name, ids, with_vectors=True):
                want = points[got.id]
                assert got.vector is not None and _cos(got.vector, want.vector) >= MIN_COSINE, got.id
                payload = got.payload
                assert (payload["media_id"], payload["frame_index"], payload["space"]) == (
                    want.media_id,
                    want.frame_index,
                    want.space,
                )
                assert abs(payload["timestamp_s"] - want.timestamp_s) < 1e-6


def assert_encrypted(settings: Settings, points: dict[str, Published]) -> None:
    from stores.encindex import open_encrypted_store

    groups = _by(points, "space")  # the encrypted index keeps one index per collection and space
    with open_encrypted_store(settings) as enc:
        assert sorted(enc.collections()) == sorted(groups)
        for name, ids in groups.items():
            assert enc.count(name) == len(ids), f"{name}: a point is missing or extra"
            got = enc.retrieve(name, ids, with_vectors=True)
            assert sorted(p.id for p in got) == sorted(ids)
            for p in got:
                assert p.vector is not None and _cos(p.vector, points[p.id].vector) >= MIN_COSINE, p.id


def assert_postgres(settings: Settings, points: dict[str, Published], frames: dict[tuple[str, int], Frame]) -> None:
    """One metadata row per point, one scene row and one thumbnail per frame, at the frame's time."""
    from stores.metadb import connect

    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT point_id::text, media_id, frame_index, timestamp_s, space FROM frame_metadata"
        ).fetchall()
        thumbs = conn.execute("SELECT media_id, frame_index FROM frame_thumbnails").fetchall()
    assert len(rows) == len(points) and {r[0] for r in rows} == set(points), "a row is missing or repeated"
    for pid, media_id, index, ts, space in rows:
        want = points[pid]
        assert (media_id, index, space) == (want.media_id, want.frame_index, want.space)
        assert abs(ts - frames[media_id, index].timestamp_s) < 1e-6
    scene = sorted((m, i) for _, m, i, _, space in rows if space == "scene")
    assert scene == sorted(frames), "not exactly one scene row per frame"
    assert sorted(thumbs) == sorted(frames), "not exactly one thumbnail per frame"


def assert_scene_is_the_models_output(
    settings: Settings, points: dict[str, Published], frames: dict[tuple[str, int], Frame], media: set[str]
) -> int:
    """The stored scene vector of every frame of ``media`` against the vision model run on that frame alone."""
    from consumers.embed.stage import decode_image
    from models.bundle import stored
    from models.clip import ClipEmbedder

    embedder = ClipEmbedder.load(settings.model)
    scene = {(p.media_id, p.frame_index): p for p in points.values() if p.space == "scene" and p.media_id in media}
    keys = sorted(scene)
    assert keys == sorted(k for k in frames if k[0] in media)
    alone = embedder.embed_images([decode_image(frames[k].jpeg) for k in keys])
    want = stored(alone, settings.model.store_dim).astype(np.float32)
    for k, w in zip(keys, want, strict=True):
        cos = _cos(scene[k].vector, w)
        assert cos >= MIN_COSINE, f"scene vector of {k}: cosine {cos:.5f} to the model's own output"
        with Image.open(io.BytesIO(frames[k].jpeg)) as image:
            assert image.size == (frames[k].width, frames[k].height)
    return len(keys)

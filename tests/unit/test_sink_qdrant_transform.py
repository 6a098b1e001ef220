"""sink-qdrant's pure transform: grouping by collection, ids, payloads, dedup within a poll."""

from __future__ import annotations

import numpy as np
import pytest

from consumers.sink import MixedDimensionError
from consumers.sink_qdrant.transform import collection_name, points_from_batches
from schemas.collections import collection_for
from schemas.ids import point_id
from schemas.models import VectorBatch, VectorRow
from schemas.spaces import SpaceName
from stores.vectorstore.base import check_name

CLIP = "open_clip/ViT-B-32/openai"


def row(
    media: str,
    frame: int,
    space: SpaceName = "scene",
    obj: int = 0,
    model: str = CLIP,
    box: tuple[float, float, float, float] | None = None,
    label: str | None = None,
    score: float | None = None,
) -> VectorRow:
    pid = point_id(model, media, frame, space, obj)
    return VectorRow(pid, space, media, frame, frame * 0.5, obj, box=box, label=label, score=score)


def batch(
    rows: list[VectorRow],
    *,
    model: str = CLIP,
    collection: str = "default",
    dim: int = 8,
    seed: int = 0,
    metadata: dict[str, str] | None = None,
    run_id: str = "",
    content_sha256: str = "",
    published_at: float = 0.0,
) -> VectorBatch:
    vectors = np.random.default_rng(seed).standard_normal((len(rows), dim)).astype(np.float16)
    url = f"http://127.0.0.1/{rows[0].media_id}.jpg"
    return VectorBatch(
        model, vectors, tuple(rows), url, collection, content_sha256, metadata or {}, run_id, published_at
    )


def test_collection_names_follow_collection_and_model() -> None:
    assert collection_for("default", CLIP) == "default__open_clip.ViT-B-32.openai"
    assert collection_for("cats", "face:arcface r100@v2") == "cats__face-arcface-r100-v2"
    assert collection_name(batch([row("a", 0)], collection="cats")) == "cats__open_clip.ViT-B-32.openai"
    assert check_name(collection_for("-x_y", CLIP)) == "-x_y__open_clip.ViT-B-32.openai"  # valid store name


def test_batches_are_grouped_by_target_collection() -> None:
    a = batch([row("a", 0), row("a", 0, "object", 1)], seed=1)
    b = batch([row("b", 3)], seed=2)
    other_collection = batch([row("c", 0)], collection="dogs", seed=3)
    grid = batch([row("a", 0, "grid", i, model="concept") for i in range(4)], model="concept", dim=4, seed=4)
    groups = points_from_batches([a, b, other_collection, grid])
    assert sorted(groups) == [
        "default__concept",
        "default__open_clip.ViT-B-32.openai",
        "dogs__open_clip.ViT-B-32.openai",
    ]
    main = groups["default__open_clip.ViT-B-32.openai"]
    assert main.ids == [r.point_id for r in a.rows + b.rows]
    assert main.dim == 8 and main.vectors.dtype == np.float16
    np.testing.assert_array_equal(main.vectors, np.concatenate([a.vectors, b.vectors]))
    assert [p["space"] for p in main.payloads] == ["scene", "object", "scene"]
    assert groups["default__concept"].vectors.shape == (4, 4)
    assert groups["dogs__open_clip.ViT-B-32.openai"].ids == [other_collection.rows[0].point_id]


def test_payload_carries_every_field() -> None:
    r = row("media-9", 12, "object", 2, box=(1.0, 2.0, 30.5, 40.0), label="cat", score=0.75)
    b = batch([r], metadata={"camera": "north"}, run_id="run-1", content_sha256="ab" * 32, published_at=1700.5)
    [group] = points_from_batches([b]).values()
    assert group.ids == [point_id(CLIP, "media-9", 12, "object", 2)]
    assert group.payloads == [
        {
            "media_id": "media-9",
            "source_url": "http://127.0.0.1/media-9.jpg",
            "frame_index": 12,
            "timestamp_s": 6.0,
            "space": "object",
            "object_index": 2,
            "box": [1.0, 2.0, 30.5, 40.0],
            "label": "cat",
            "score": 0.75,
            "collection": "default",
            "model": CLIP,
            "content_sha256": "ab" * 32,
            "run_id": "run-1",
            "meta": {"camera": "north"},
            "published_at": 1700.5,
            "frame_width": None,
            "frame_height": None,
        }
    ]


def test_a_point_id_seen_twice_in_one_poll_keeps_the_last_copy() -> None:
    first = batch([row("a", 0), row("a", 1)], run_id="old", seed=5)
    replay = batch([row("a", 1)], run_id="new", seed=6)
    [group] = points_from_batches([first, replay]).values()
    assert group.ids == [first.rows[0].point_id, first.rows[1].point_id]
    assert [p["run_id"] for p in group.payloads] == ["old", "new"]
    np.testing.assert_array_equal(group.vectors[1], replay.vectors[0])
    np.testing.assert_array_equal(group.vectors[0], first.vectors[0])


def test_empty_input_and_empty_batches_give_no_upserts() -> None:
    empty = VectorBatch(CLIP, np.zeros((0, 8), np.float16), (), "http://127.0.0.1/x.jpg", "default")
    assert points_from_batches([]) == {}
    assert points_from_batches([empty]) == {}


def test_one_collection_with_two_dimensions_is_refused() -> None:
    with pytest.raises(MixedDimensionError, match="dimension 16 after 8"):
        points_from_batches([batch([row("a", 0)], dim=8), batch([row("b", 0)], dim=16)])

"""EmbedStage with the scene space alone: one vector_batch per good frame (real ViT-B-32, random weights).

The other spaces are covered by tests/unit/test_embed_spaces.py.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import skimage
from PIL import Image

import schemas
from consumers.embed.pipeline import FrameVectors, Row
from consumers.embed.settings import EmbedSettings
from consumers.embed.stage import (
    EmbedStage,
    VectorWriter,
    decode_image,
    decode_scaled,
    embed_frames_in_memory,
    scaled_decode_sides,
)
from consumers.embed.thumbnail import FrameView
from mediavec.settings import Settings
from models import ClipEmbedder
from models.bundle import EmbedModels, stored
from models.images import thumbnail_jpeg, thumbnail_size
from models.settings import ModelSettings
from schemas.models import Frame
from streams.stage import Failure, InputRecord, OutputRecord, Result, RetryBatch, Stage

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
# Located without importing ultralytics: its import sets OMP_NUM_THREADS=1 for the whole process.
_ULTRALYTICS = importlib.util.find_spec("ultralytics")
assert _ULTRALYTICS is not None and _ULTRALYTICS.origin is not None
ULTRALYTICS_ASSETS = Path(_ULTRALYTICS.origin).parent / "assets"
PHOTOS = (
    SKIMAGE_DATA / "astronaut.png",
    SKIMAGE_DATA / "coffee.png",
    SKIMAGE_DATA / "chelsea.png",
    ULTRALYTICS_ASSETS / "bus.jpg",
    ULTRALYTICS_ASSETS / "zidane.jpg",
)
RANDOM = ModelSettings(allow_random_weights=True)
DIM = 256  # the default stored width: 512-d ViT-B-32 truncated and renormalised


def jpeg_of(path: Path) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_frame(media_id: str, index: int, jpeg: bytes) -> Frame:
    return Frame(
        media_id=media_id,
        frame_index=index,
        timestamp_s=index * 0.5,
        source_url=f"http://127.0.0.1:8000/{media_id}.jpg",
        collection="photos",
        width=1,
        height=1,
        jpeg=jpeg,
        content_sha256=hashlib.sha256(jpeg).hexdigest(),
        metadata={"source": "unit-test", "media": media_id},
        run_id="run-7",
        published_at=1_700_000_000.25,
    )


def record(value: bytes, offset: int, key: bytes | None = None) -> InputRecord:
    return InputRecord(topic="media.frames", partition=0, offset=offset, key=key, value=value)


def frame_record(frame: Frame, offset: int) -> InputRecord:
    return record(schemas.encode_frame(frame), offset, frame.media_id.encode())


def vectors_of(result: Result) -> schemas.VectorBatch:
    assert isinstance(result, list) and len(result) == 1
    out = result[0]
    assert isinstance(out, OutputRecord) and out.topic == "vectors"
    return schemas.decode_vector_batch(out.value)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a32, b32 = a.astype(np.float32).ravel(), b.astype(np.float32).ravel()
    return float(a32 @ b32 / (np.linalg.norm(a32) * np.linalg.norm(b32)))


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> ClipEmbedder:
    return ClipEmbedder.load(RANDOM, hub_cache_dir=tmp_path_factory.mktemp("empty-hub-cache"))


@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    return [make_frame(f"media-{i}", i, jpeg_of(p)) for i, p in enumerate(PHOTOS)]


def stage_with(embedder: ClipEmbedder, batch_size: int = 64, **embed: int) -> EmbedStage:
    settings = Settings(model=RANDOM, embed=EmbedSettings(batch_size=batch_size, spaces=("scene",), **embed))
    stage = EmbedStage(settings, EmbedModels(vision=embedder))
    stage.start()
    return stage


def test_one_scene_vector_event_per_frame(embedder: ClipEmbedder, frames: list[Frame]) -> None:
    stage: Stage = stage_with(embedder)  # mypy checks the protocol
    assert (stage.name, stage.input_topic) == ("embed", "frames")
    results = stage.process([frame_record(f, i) for i, f in enumerate(frames)])
    assert len(results) == len(frames)
    for frame, result in zip(frames, results, strict=True):
        assert isinstance(result, list) and result[0].key == frame.media_id.encode()
        batch = vectors_of(result)
        assert batch.model == "open_clip/ViT-B-32/random-seed0"
        assert batch.vectors.dtype == np.float16 and batch.vectors.shape == (1, DIM)
        (row,) = batch.rows
        assert row.point_id == schemas.point_id(batch.model, frame.media_id, frame.frame_index, "scene", 0)
        assert (row.space, row.media_id, row.frame_index, row.timestamp_s) == (
            "scene",
            frame.media_id,
            frame.frame_index,
            frame.timestamp_s,
        )
        assert (batch.source_url, batch.collection, batch.content_sha256) == (
            frame.source_url,
            frame.collection,
            frame.content_sha256,
        )
        assert (batch.metadata, batch.run_id, batch.published_at) == (frame.metadata, frame.run_id, frame.published_at)
        alone = embedder.embed_images([decode_image(frame.jpeg)])
        assert cosine(batch.vectors, stored(alone, DIM)) >= 0.999
        assert abs(float(np.linalg.norm(batch.vectors.astype(np.float32))) - 1.0) < 2e-3


def test_bad_events_fail_alone_and_in_order(embedder: ClipEmbedder, frames: list[Frame]) -> None:
    good_a, good_b = frames[0], frames[3]
    truncated = make_frame("cut", 2, good_b.jpeg[: len(good_b.jpeg) // 2])
    batch = [
        frame_record(good_a, 10),
        record(b"\xc3\x01 certainly not a frame", 11, key=b"garbage"),
        frame_record(make_frame("text", 1, b"this is not a jpeg"), 12),
        frame_record(truncated, 13),
        frame_record(good_b, 14),
    ]
    results = stage_with(embedder).process(batch)
    assert len(results) == 5
    assert vectors_of(results[0]).rows[0].media_id == "media-0"
    assert vectors_of(results[4]).rows[0].media_id == "media-3"
    failures = results[1:4]
    assert all(isinstance(f, Failure) for f in failures)
    assert [(f.error_class, f.media_id) for f in failures if isinstance(f, Failure)] == [
        ("invalid_frame", "garbage"),
        ("undecodable_frame", "text"),
        ("undecodable_frame", "cut"),
    ]
    assert isinstance(results[3], Failure) and results[3].details == {"frame_index": "2"}
    clean = stage_with(embedder).process([frame_record(good_b, 0)])
    np.testing.assert_array_equal(vectors_of(results[4]).vectors, vectors_of(clean[0]).vectors)


def test_a_batch_of_only_bad_events_needs_no_model_call(embedder: ClipEmbedder) -> None:
    results = stage_with(embedder).process([record(b"", 0), record(b"junk", 1)])
    assert [r.error_class for r in results if isinstance(r, Failure)] == ["invalid_frame", "invalid_frame"]


def test_chunked_forward_matches_a_single_forward(embedder: ClipEmbedder, frames: list[Frame]) -> None:
    batch = [frame_record(f, i) for i, f in enumerate(frames)]
    chunked = [vectors_of(r).vectors for r in stage_with(embedder, batch_size=2).process(batch)]
    single = [vectors_of(r).vectors for r in stage_with(embedder, batch_size=64).process(batch)]
    for a, b in zip(chunked, single, strict=True):
        assert cosine(a, b) >= 0.999


def test_in_memory_baseline_computes_what_the_stage_computes(embedder: ClipEmbedder, frames: list[Frame]) -> None:
    in_memory = stored(embed_frames_in_memory(embedder, frames, batch_size=64), DIM)
    results = stage_with(embedder, batch_size=64).process([frame_record(f, i) for i, f in enumerate(frames)])
    staged = np.concatenate([vectors_of(r).vectors for r in results])
    assert in_memory.dtype == np.float16 and in_memory.shape == (len(frames), DIM)
    np.testing.assert_allclose(in_memory.astype(np.float32), staged.astype(np.float32), atol=2e-3)


def test_model_fault_retries_the_whole_batch(frames: list[Frame]) -> None:
    # A tag no hub cache can hold, so this machine's cache cannot turn the random model into a real one.
    model = ModelSettings(pretrained="no-such-tag", allow_random_weights=True)
    stage = EmbedStage(Settings(model=model, embed=EmbedSettings(spaces=("scene",))))
    with pytest.raises(RuntimeError, match="start"):
        stage.process([frame_record(frames[0], 0)])
    stage.start()  # builds its own embedder from the settings
    vision = stage.models.vision
    assert vision is not None and vision.model_id == "open_clip/ViT-B-32/random-seed0"
    # The weights vanish from the device under the stage, as they do when a GPU is lost.
    vision.model.to("meta")
    with pytest.raises(RetryBatch, match="model call failed"):
        stage.process([frame_record(frames[0], 0), record(b"junk", 1)])
    stage.close()
    with pytest.raises(RuntimeError, match="start"):
        stage.process([frame_record(frames[0], 0)])


# -- thumbnails ------------------------------------------------------------------------------


def test_each_frame_gets_its_size_and_a_128px_jpeg_thumbnail(embedder: ClipEmbedder, frames: list[Frame]) -> None:
    results = stage_with(embedder).process([frame_record(f, i) for i, f in enumerate(frames)])
    for frame, result in zip(frames, results, strict=True):
        batch = vectors_of(result)
        decoded = decode_image(frame.jpeg)
        assert (batch.frame_width, batch.frame_height) == decoded.size  # the pixel space of the boxes
        assert batch.thumbnail is not None and batch.thumbnail.startswith(b"\xff\xd8")
        with Image.open(io.BytesIO(batch.thumbnail)) as thumb:
            assert thumb.format == "JPEG" and thumb.mode == "RGB"
            assert max(thumb.size) == 128 and thumb.size == thumbnail_size(*decoded.size, 128)
            small = np.asarray(thumb.convert("RGB"), dtype=np.float32)
        # It shows the frame: the frame scaled the same way differs only by JPEG noise.
        expected = np.asarray(decoded.resize(thumb.size, Image.Resampling.BICUBIC), dtype=np.float32)
        assert float(np.abs(small - expected).mean()) < 12.0
        assert len(batch.thumbnail) < 16 * 1024


def test_thumbnail_side_zero_means_no_thumbnail_but_the_frame_size_stays(
    embedder: ClipEmbedder, frames: list[Frame]
) -> None:
    (result,) = stage_with(embedder, thumbnail_side=0).process([frame_record(frames[3], 0)])
    batch = vectors_of(result)
    assert batch.thumbnail is None
    assert (batch.frame_width, batch.frame_height) == decode_image(frames[3].jpeg).size


def test_the_thumbnail_follows_the_side_and_quality_settings(frames: list[Frame]) -> None:
    image = decode_image(frames[0].jpeg)
    sharp, rough = thumbnail_jpeg(image, 256, 95), thumbnail_jpeg(image, 256, 20)
    assert sharp is not None and rough is not None and len(rough) < len(sharp)
    with Image.open(io.BytesIO(sharp)) as thumb:
        assert max(thumb.size) == 256
    assert thumbnail_size(100, 50, 128) == (100, 50)  # never enlarged
    assert thumbnail_size(5000, 10, 128) == (128, 1)  # never below a pixel
    with pytest.raises(ValueError):
        EmbedSettings(thumbnail_quality=0)
    with pytest.raises(ValueError):
        EmbedSettings(thumbnail_side=-1)


def test_only_the_batch_with_the_scene_row_carries_the_thumbnail(embedder: ClipEmbedder, frames: list[Frame]) -> None:
    """A frame yields one batch per model; the thumbnail rides once, on the scene's (else the first)."""
    settings = Settings(model=RANDOM, embed=EmbedSettings(spaces=("scene",)))
    writer = VectorWriter(EmbedModels(vision=embedder, concept=embedder), settings)  # two producing models
    vector = np.ones(512, np.float32) / np.sqrt(512)
    view = FrameView(640, 480, b"\xff\xd8 thumb")
    scene_second = FrameVectors({"concept": [Row("grid", 0, vector)], "vision": [Row("scene", 0, vector)]})
    no_scene = FrameVectors({"concept": [Row("grid", 0, vector)], "vision": [Row("object", 0, vector, (0, 0, 9, 9))]})
    for vectors, carrier in ((scene_second, 1), (no_scene, 0)):
        batches = [schemas.decode_vector_batch(o.value) for o in writer.outputs(frames[0], vectors, view)]
        assert [b.thumbnail for b in batches] == [view.thumbnail if i == carrier else None for i in range(2)]
        assert {(b.frame_width, b.frame_height) for b in batches} == {(640, 480)}


def test_scene_only_frames_decode_at_the_smallest_scale_the_model_and_thumbnail_allow(
    embedder: ClipEmbedder, frames: list[Frame]
) -> None:
    scene_only = Settings(model=RANDOM, embed=EmbedSettings(spaces=("scene",)))
    assert scaled_decode_sides(scene_only, EmbedModels(vision=embedder)) == (448, 128)  # twice the input side
    every = Settings(model=RANDOM, embed=EmbedSettings(spaces=("scene", "object")))
    assert scaled_decode_sides(every, EmbedModels(vision=embedder)) == (0, 0)  # crops want every pixel
    zidane = frames[4].jpeg  # 1280x720: libjpeg can halve it and still give 224 px on the short side
    image, size = decode_scaled(zidane, (224, 128))
    assert size == (1280, 720) and image.size == (640, 360) and image.mode == "RGB"
    assert decode_scaled(zidane, (224, 700))[0].size == (1280, 720)  # a long side of 640 is too short
    assert decode_scaled(zidane)[0].size == (1280, 720)
    png = io.BytesIO()
    Image.open(PHOTOS[0]).save(png, "PNG")
    assert decode_scaled(png.getvalue(), (32, 32))[0].size == (512, 512)  # only JPEG has draft mode


def test_frame_bytes_are_identified_without_pil_open_and_checked_before_decoding() -> None:
    """ultralytics (imported here, as the embed worker does for its detector) patches PIL.Image.open to
    pip-install a HEIF plugin for unidentified bytes; a frame is never opened through it."""
    import ultralytics  # noqa: F401

    with pytest.raises(ValueError, match="not an image"):
        decode_image(b"not a jpeg")
    wide = io.BytesIO()
    Image.new("RGB", (8193, 1)).save(wide, "JPEG")
    with pytest.raises(ValueError, match="over 8192 on a side"):
        decode_image(wide.getvalue())

"""Every space per frame, on real photos and real models: the shipped YOLOv8 person detector, dlib
faces, PP-OCR, and open_clip ViT-B-32 and MobileCLIP2-S0 built with random weights."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import schemas
from consumers.embed.settings import EmbedSettings
from consumers.embed.stage import EmbedStage
from mediavec.settings import Settings
from models.bundle import EmbedModels
from models.settings import ConceptSettings, ModelSettings
from schemas.models import Frame, VectorBatch
from streams.stage import Failure, OutputRecord
from tests.unit.test_embed_stage import ULTRALYTICS_ASSETS, frame_record, jpeg_of, make_frame

SETTINGS = Settings(
    model=ModelSettings(allow_random_weights=True),
    concept=ConceptSettings(allow_random_weights=True),
    embed=EmbedSettings(frames_per_batch=8),
)
WORD = "MEDIAVEC"


def text_photo() -> bytes:
    """A sign: one word in large black letters on white."""
    image = Image.new("RGB", (640, 240), "white")
    font = ImageFont.load_default(size=96)
    ImageDraw.Draw(image).text((40, 60), WORD, fill="black", font=font)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def quiet_photo() -> bytes:
    """A static, empty scene: a smooth grey gradient."""
    ramp = np.tile(np.linspace(90, 140, 640, dtype=np.uint8), (360, 1))
    buf = io.BytesIO()
    Image.fromarray(np.stack([ramp] * 3, axis=-1)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def stage() -> Iterator[EmbedStage]:
    stage = EmbedStage(SETTINGS, EmbedModels.load(SETTINGS, SETTINGS.embed.spaces))
    stage.start()
    yield stage
    stage.close()


@pytest.fixture(scope="module")
def frames() -> dict[str, Frame]:
    sources = {
        "bus": jpeg_of(ULTRALYTICS_ASSETS / "bus.jpg"),
        "zidane": jpeg_of(ULTRALYTICS_ASSETS / "zidane.jpg"),
        "sign": text_photo(),
        "quiet": quiet_photo(),
    }
    out = {}
    for i, (name, jpeg) in enumerate(sources.items()):
        with Image.open(io.BytesIO(jpeg)) as im:
            w, h = im.size
        frame = make_frame(name, i, jpeg)
        out[name] = Frame(**{**frame.__dict__, "width": w, "height": h})
    return out


@pytest.fixture(scope="module")
def batches(stage: EmbedStage, frames: dict[str, Frame]) -> dict[str, list[VectorBatch]]:
    results = stage.process([frame_record(f, i) for i, f in enumerate(frames.values())])
    out = {}
    for name, result in zip(frames, results, strict=True):
        assert not isinstance(result, Failure), result
        assert all(isinstance(o, OutputRecord) and o.key == name.encode() for o in result)
        out[name] = [schemas.decode_vector_batch(o.value) for o in result]
    return out


def rows_by_space(batches: list[VectorBatch]) -> dict[str, list[tuple[VectorBatch, int]]]:
    out: dict[str, list[tuple[VectorBatch, int]]] = defaultdict(list)
    for b in batches:
        for i, row in enumerate(b.rows):
            out[row.space].append((b, i))
    return out


def test_every_batch_is_fp16_unit_rows_at_its_stored_width(batches: dict[str, list[VectorBatch]]) -> None:
    widths = {}
    for frame_batches in batches.values():
        for b in frame_batches:
            assert b.vectors.dtype == np.float16
            norms = np.linalg.norm(b.vectors.astype(np.float32), axis=1)
            np.testing.assert_allclose(norms, 1.0, atol=3e-3)
            widths[b.model] = b.dim
            ids = [r.point_id for r in b.rows]
            assert len(set(ids)) == len(ids)
    assert widths == {
        "open_clip/ViT-B-32/random-seed0": 256,
        "open_clip/MobileCLIP2-S0/random-seed0": 256,
        "dlib/face_recognition_resnet_v1/128": 128,  # faces are never truncated
    }


def test_people_become_object_vectors_with_boxes_inside_the_frame(
    batches: dict[str, list[VectorBatch]], frames: dict[str, Frame]
) -> None:
    spaces = rows_by_space(batches["bus"])
    objects = spaces["object"]
    assert len(objects) >= 3 and {b.rows[i].label for b, i in objects} == {"person"}
    frame = frames["bus"]
    for b, i in objects:
        x1, y1, x2, y2 = b.rows[i].box or (0, 0, 0, 0)
        assert 0 <= x1 < x2 <= frame.width and 0 <= y1 < y2 <= frame.height
        score = b.rows[i].score
        assert score is not None and score >= SETTINGS.detector.min_score
        assert b.model == "open_clip/ViT-B-32/random-seed0"  # crops share the scene's space
    assert [r.object_index for b, i in objects for r in [b.rows[i]]] == list(range(len(objects)))
    assert len(spaces["scene"]) == 1
    assert "person" in {b.rows[i].label for b, i in spaces["text"]}


def test_the_grid_is_the_frame_and_its_sixteen_patches_labelled_from_the_prompt_bank(
    batches: dict[str, list[VectorBatch]], frames: dict[str, Frame]
) -> None:
    grid = rows_by_space(batches["bus"])["grid"]
    assert len(grid) == 17 and {b.model for b, _ in grid} == {"open_clip/MobileCLIP2-S0/random-seed0"}
    rows = [b.rows[i] for b, i in grid]
    frame = frames["bus"]
    assert rows[0].box == (0.0, 0.0, float(frame.width), float(frame.height))
    area = sum((r.box[2] - r.box[0]) * (r.box[3] - r.box[1]) for r in rows[1:] if r.box)
    assert area == frame.width * frame.height  # the patches tile the frame
    assert rows[0].label is not None and rows[0].label.startswith("frame: ")
    assert rows[16].label is not None and rows[16].label.startswith("patch 3,3: ")


def test_faces_get_their_own_identity_space(batches: dict[str, list[VectorBatch]], frames: dict[str, Frame]) -> None:
    faces = rows_by_space(batches["zidane"])["face"]
    assert len(faces) >= 1
    frame = frames["zidane"]
    for b, i in faces:
        x1, y1, x2, y2 = b.rows[i].box or (0, 0, 0, 0)
        assert 0 <= x1 < x2 <= frame.width and 0 <= y1 < y2 <= frame.height
    assert "face" not in rows_by_space(batches["quiet"])


def test_ocr_reads_become_text_vectors(batches: dict[str, list[VectorBatch]]) -> None:
    texts = {b.rows[i].label: b.rows[i] for b, i in rows_by_space(batches["sign"])["text"]}
    assert WORD in texts, texts.keys()
    row = texts[WORD]
    assert row.box is not None and row.score is not None and row.score >= 0.5


def test_a_quiet_frame_yields_far_fewer_vectors_than_a_busy_one(batches: dict[str, list[VectorBatch]]) -> None:
    quiet = rows_by_space(batches["quiet"])
    busy = rows_by_space(batches["bus"])
    assert set(quiet) == {"scene", "grid"}
    assert sum(len(v) for v in quiet.values()) == 18
    assert sum(len(v) for v in busy.values()) > 18 + 3


def test_the_runs_prompt_classes_score_against_the_scene(stage: EmbedStage, frames: dict[str, Frame]) -> None:
    frame = Frame(**{**frames["bus"].__dict__, "options_json": '{"prompts": ["a bus", "a red car", "a bus"]}'})
    (result,) = stage.process([frame_record(frame, 0)])
    assert isinstance(result, list)
    texts = [r for o in result for r in schemas.decode_vector_batch(o.value).rows if r.space == "text"]
    prompt_rows = [r for r in texts if r.label in ("a bus", "a red car")]
    # Zero-shot over the run's prompts: whichever matches is kept with its probability, once.
    assert len({r.label for r in prompt_rows}) == len(prompt_rows)
    assert all(r.score is not None and 0.2 <= r.score <= 1.0 for r in prompt_rows)
    assert len({r.point_id for r in texts}) == len(texts)


def test_spaces_follow_the_setting(frames: dict[str, Frame], tmp_path: Path) -> None:
    settings = Settings(
        model=ModelSettings(allow_random_weights=True, store_dim=None),
        embed=EmbedSettings(spaces=("scene", "object")),
    )
    models = EmbedModels.load(settings, settings.embed.spaces, prompt_bank=settings.embed.prompt_bank)
    assert (models.concept, models.faces, models.ocr) == (None, None, None)
    stage = EmbedStage(settings, models)
    stage.start()
    (result,) = stage.process([frame_record(frames["bus"], 0)])
    stage.close()
    assert isinstance(result, list) and len(result) == 1
    batch = schemas.decode_vector_batch(result[0].value)
    assert batch.dim == 512 and {r.space for r in batch.rows} == {"scene", "object"}


def test_every_batch_of_a_frame_says_its_size_and_one_carries_the_thumbnail(
    batches: dict[str, list[VectorBatch]], frames: dict[str, Frame]
) -> None:
    for name, frame_batches in batches.items():
        frame = frames[name]
        assert len(frame_batches) >= 2  # vision and concept at least: the thumbnail must not repeat
        assert {(b.frame_width, b.frame_height) for b in frame_batches} == {(frame.width, frame.height)}
        carriers = [b for b in frame_batches if b.thumbnail is not None]
        assert len(carriers) == 1 and "scene" in {r.space for r in carriers[0].rows}
        with Image.open(io.BytesIO(carriers[0].thumbnail or b"")) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) == 128

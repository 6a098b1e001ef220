"""The ArcFace face backend on real photos and a real ONNX network (no hub, no mocks).

No ArcFace weights exist offline, so the network is a small IResNet (ArcFace's backbone family:
pre-activation blocks with PReLU, a 7x7 feature map, a linear 512-d embedding with batch norm)
with seeded random weights, exported to ONNX with torch's TorchScript exporter (it needs the
``onnx`` package). Random weights say nothing about identity, so these tests check the plumbing:
alignment, the model's input and output, batching, limits and errors. Photos: the group photos
of npm @vladmandic/face-api, scaled to 800 pixels as the embed stage scales frames.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from devstack.testmedia import face_api_photos
from models.arcface import (
    ARCFACE_TEMPLATE,
    ArcFaceEmbedder,
    align,
    apply,
    reference_points,
    similarity_transform,
)
from models.faces import FaceEmbedder

DIM = 512
MAX_SIDE = 800
# Largest root-mean-square distance (crop pixels) between a face's mapped reference points and
# the template: real faces are not the template's shape, so a good fit leaves a few pixels (the
# 68-point fits of the demo faces leave 1.7-6.8); a transform the wrong way round leaves tens.
MAX_RESIDUAL = 8.0


class _IBasicBlock(nn.Module):
    """insightface's IBasicBlock: BN, conv, BN, PReLU, strided conv, BN, plus a projected shortcut."""

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(channels_in),
            nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels_out),
            nn.PReLU(channels_out),
            nn.Conv2d(channels_out, channels_out, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels_out),
        )
        self.shortcut = nn.Sequential(
            nn.Conv2d(channels_in, channels_out, 1, stride=2, bias=False), nn.BatchNorm2d(channels_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class TinyIResNet(nn.Module):
    """112x112 RGB in, 512-d embedding out; four stages take 112 down to 7, as in IResNet."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 48, 64)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.PReLU(widths[0])
        )
        stages = zip((widths[0], *widths[:-1]), widths, strict=True)
        self.stages = nn.Sequential(*(_IBasicBlock(a, b) for a, b in stages))
        self.head = nn.Sequential(
            nn.BatchNorm2d(widths[-1]), nn.Flatten(), nn.Linear(widths[-1] * 7 * 7, DIM), nn.BatchNorm1d(DIM)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def _export(model: nn.Module, path: Path, shape: tuple[int, ...], *, dynamic_batch: bool) -> Path:
    axes = {"input.1": {0: "batch"}, "embedding": {0: "batch"}} if dynamic_batch else None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, chosen on purpose
        torch.onnx.export(
            model,
            (torch.zeros(shape),),
            str(path),
            dynamo=False,
            input_names=["input.1"],
            output_names=["embedding"],
            dynamic_axes=axes,
        )
    return path


@pytest.fixture(scope="module")
def network() -> TinyIResNet:
    torch.manual_seed(7)
    model = TinyIResNet()
    for module in model.modules():  # running statistics away from 0/1, so batch norm does something
        if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def onnx_file(network: TinyIResNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(network, tmp_path_factory.mktemp("arcface") / "tiny_r4.onnx", (2, 3, 112, 112), dynamic_batch=True)


@pytest.fixture(scope="module")
def embedder(onnx_file: Path) -> ArcFaceEmbedder:
    return ArcFaceEmbedder.load(onnx_file)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Image.Image]:
    """sample1..6.jpg from face-api's demo folder (groups of one to five people), at most 800 pixels a side."""
    paths = face_api_photos(tmp_path_factory.mktemp("photos"))
    scaled = []
    for path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        rgb.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
        scaled.append(rgb)
    return scaled


def _pixels(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _inside(box: tuple[float, float, float, float], size: tuple[int, int]) -> bool:
    x1, y1, x2, y2 = box
    return 0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1]


# -- alignment ---------------------------------------------------------------------------------


def test_similarity_transform_recovers_a_known_rotation_scale_and_shift() -> None:
    angle = np.deg2rad(25.0)
    rotation = 3.1 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    known = np.hstack([rotation, [[410.0], [-35.5]]])
    frame_points = apply(known, ARCFACE_TEMPLATE)
    assert np.allclose(similarity_transform(ARCFACE_TEMPLATE, frame_points), known, atol=1e-9)
    back = similarity_transform(frame_points, ARCFACE_TEMPLATE)
    assert np.allclose(apply(back, frame_points), ARCFACE_TEMPLATE, atol=1e-9)
    # A mirrored face is fitted with a rotation (positive determinant), never a reflection.
    mirrored = frame_points * [-1.0, 1.0]
    assert np.linalg.det(similarity_transform(mirrored, ARCFACE_TEMPLATE)[:, :2]) > 0
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), ARCFACE_TEMPLATE)


def test_detected_landmarks_land_on_the_template(embedder: ArcFaceEmbedder, photos: list[Image.Image]) -> None:
    aligned = [a for photo in photos[:3] for _, a in embedder.aligned(photo)]
    assert len(aligned) >= 8
    for a in aligned:
        assert a.crop.shape == (112, 112, 3) and a.crop.dtype == np.uint8
        assert a.residual < MAX_RESIDUAL
    # The least-squares fit: nudging its shift moves the mapped points off the template.
    face, first = embedder.aligned(photos[0])[0]
    source, template = reference_points(face.points)
    nudged = first.matrix + np.array([[0, 0, 1.0], [0, 0, -1.0]])
    assert np.sqrt(((apply(nudged, source) - template) ** 2).sum(axis=1).mean()) > first.residual


def test_the_warp_puts_each_landmark_where_the_matrix_says(
    embedder: ArcFaceEmbedder, photos: list[Image.Image]
) -> None:
    """A dot drawn in the red channel at each reference point of a real face shows up in the crop at
    the point the alignment matrix maps it to (cv2's warp convention matches the matrix's)."""
    face, aligned = embedder.aligned(photos[0])[0]
    source, _ = reference_points(face.points)
    height, width = photos[0].height, photos[0].width
    ys, xs = np.mgrid[0:height, 0:width]
    for point, expected in zip(source, apply(aligned.matrix, source), strict=True):
        canvas = np.zeros((height, width, 3), dtype=np.uint8)
        canvas[..., 0] = 255 * ((xs - point[0]) ** 2 + (ys - point[1]) ** 2 <= 9)
        crop = align(canvas, face.points).crop.astype(np.float64)
        assert crop[..., 1:].max() == 0 and crop[..., 0].sum() > 0  # RGB kept in order
        weights = crop[..., 0] / crop[..., 0].sum()
        cy, cx = (weights * np.mgrid[0:112, 0:112]).sum(axis=(1, 2))
        assert abs(cx - expected[0]) < 0.5 and abs(cy - expected[1]) < 0.5


def test_five_point_alignment_agrees_with_the_68_point_one(
    onnx_file: Path, embedder: ArcFaceEmbedder, photos: list[Image.Image]
) -> None:
    """On real faces (min_score drops sample1's badge, a HOG false positive with no real landmarks)."""
    five = ArcFaceEmbedder.load(onnx_file, landmarks=5)
    for photo in photos[:3]:
        faces68, faces5 = embedder.aligned(photo, min_score=0.3), five.aligned(photo, min_score=0.3)
        assert faces68
        assert [f.box for f, _ in faces5] == [f.box for f, _ in faces68]
        for (face68, a68), (face5, a5) in zip(faces68, faces5, strict=True):
            assert face5.points.shape == (5, 2) and a5.residual < MAX_RESIDUAL
            # The 68-point eye centres, nose tip and mouth corners land within a few pixels either way
            # (measured: at most 5.5 on the demo faces).
            source, _ = reference_points(face68.points)
            assert np.linalg.norm(apply(a5.matrix, source) - apply(a68.matrix, source), axis=1).max() < 8


# -- descriptors -------------------------------------------------------------------------------


def test_onnx_descriptors_equal_the_torch_network_on_the_aligned_crops(
    network: TinyIResNet, embedder: ArcFaceEmbedder, photos: list[Image.Image]
) -> None:
    crops = np.stack([a.crop for _, a in embedder.aligned(photos[0])])
    rgb = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        expected = torch.nn.functional.normalize(network((rgb - 127.5) / 127.5), dim=1).numpy()
    descriptors = embedder.embed_crops(crops)
    assert np.allclose(descriptors, expected, atol=1e-4)
    assert np.array_equal(np.stack([f.descriptor for f in embedder.faces(photos[0])]), descriptors)


def test_descriptors_are_unit_512d_one_per_detected_face(embedder: ArcFaceEmbedder, photos: list[Image.Image]) -> None:
    dlib_boxes = [f.box for f in FaceEmbedder.load().faces(photos[0])]
    faces = embedder.faces(photos[0])
    assert len(faces) >= 3 and [f.box for f in faces] == dlib_boxes
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    for face in faces:
        assert face.descriptor.shape == (DIM,) and face.descriptor.dtype == np.float32
        assert abs(float(np.linalg.norm(face.descriptor)) - 1) < 1e-5
        assert _inside(face.box, photos[0].size)
    assert embedder.dim == DIM and embedder.model_id == f"arcface/tiny_r4/{DIM}"
    assert embedder.faces(Image.new("RGB", (320, 240), "white")) == []
    assert embedder.faces(photos[0], min_score=faces[0].score + 1) == []
    top2 = embedder.faces(photos[0], max_faces=2)
    assert [f.box for f in top2] == [f.box for f in faces[:2]]


def test_same_input_same_descriptors_whatever_the_batching(
    onnx_file: Path, embedder: ArcFaceEmbedder, photos: list[Image.Image]
) -> None:
    first, again = embedder.faces(photos[1]), embedder.faces(photos[1])
    assert [f.box for f in first] == [f.box for f in again]
    assert all(np.array_equal(a.descriptor, b.descriptor) for a, b in zip(first, again, strict=True))

    together = embedder.faces_many([photos[0], Image.new("RGB", (64, 64)), photos[1]])
    assert [len(faces) for faces in together] == [len(embedder.faces(photos[0])), 0, len(first)]
    assert all(np.allclose(a.descriptor, b.descriptor, atol=1e-5) for a, b in zip(together[2], first, strict=True))

    crops = np.stack([a.crop for photo in photos[:3] for _, a in embedder.aligned(photo)])
    batched = embedder.embed_crops(crops)
    single = np.concatenate([embedder.embed_crops(crop[None]) for crop in crops])
    in_twos = ArcFaceEmbedder.load(onnx_file, batch_size=2).embed_crops(crops)
    assert len(batched) == len(crops) and np.allclose(batched, single, atol=1e-5)
    assert np.allclose(batched, in_twos, atol=1e-5)


def test_a_fixed_batch_model_is_padded_and_gives_the_same_descriptors(
    network: TinyIResNet, embedder: ArcFaceEmbedder, photos: list[Image.Image], tmp_path: Path
) -> None:
    fixed = ArcFaceEmbedder.load(_export(network, tmp_path / "fixed4.onnx", (4, 3, 112, 112), dynamic_batch=False))
    assert fixed.fixed_batch == 4 and embedder.fixed_batch is None
    crops = np.stack([a.crop for photo in photos[:2] for _, a in embedder.aligned(photo)])
    assert len(crops) % 4 != 0  # the last call is padded
    assert np.allclose(fixed.embed_crops(crops), embedder.embed_crops(crops), atol=1e-5)


# -- errors ------------------------------------------------------------------------------------


def test_a_missing_or_unset_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"ArcFace ONNX model not found: .*absent\.onnx"):
        ArcFaceEmbedder.load(tmp_path / "absent.onnx")
    with pytest.raises(ValueError, match="MEDIAVEC_FACES__ARCFACE_ONNX"):
        ArcFaceEmbedder.load(None)


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (1, 112, 112, 3), (1, 1, 112, 112)])
def test_a_model_with_another_input_shape_is_refused(tmp_path: Path, shape: tuple[int, ...]) -> None:
    model = nn.Sequential(nn.Conv2d(shape[1], 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    path = _export(model, tmp_path / "wrong.onnx", shape, dynamic_batch=True)
    with pytest.raises(ValueError, match=r"expected one float input of shape \(batch, 3, 112, 112\)"):
        ArcFaceEmbedder.load(path)


def test_crops_of_another_size_are_refused(embedder: ArcFaceEmbedder) -> None:
    with pytest.raises(ValueError, match=r"expected \(n, 112, 112, 3\) crops"):
        embedder.embed_crops(np.zeros((2, 3, 112, 112), dtype=np.uint8))

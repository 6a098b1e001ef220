"""Faces in an ArcFace identity space: dlib finds and landmarks faces, an ArcFace ONNX model embeds them.

Each face is aligned the way insightface aligns its training crops: a similarity transform
(rotation, uniform scale, shift; Umeyama's least squares) takes five reference points onto the
112x112 ArcFace template, and ``cv2.warpAffine`` cuts the crop (bilinear, black border), as
insightface's ``norm_crop`` does. The crop goes in as RGB, NCHW, ``(x - 127.5) / 127.5``.

The reference points come from dlib's 68-point shape predictor by default: eye centres (the mean
of each eye's six contour points), the nose tip (point 30) and the mouth corners (48, 54), which
are the five points the template is defined on, so nothing is estimated. dlib's 5-point model
gives eye corners and the base of the nose instead; with ``landmarks=5`` the eye-corner midpoints
and the nose base are mapped onto :data:`DLIB5_TEMPLATE`, those points' mean positions in
ArcFace crops aligned with the 68-point model. Note the 68-point model's training data (iBUG
300-W) is licensed for non-commercial use only; the 5-point model is not so restricted.

Descriptors are unit-normalised float32, so cosine similarity is a dot product.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from models.faces import Face, FaceEmbedder, LocatedFace

logger = logging.getLogger(__name__)

CROP_SIDE = 112
# insightface's ``arcface_dst``: left eye, right eye, nose tip, left and right mouth corner (image
# left and right), in pixels of the 112x112 crop.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
# Where dlib's 5-point landmarks land in ArcFace crops aligned with the 68-point model: the
# midpoint of the image-left eye's corners, of the image-right eye's corners, and the nose base.
# Means over the 20 faces of face-api's demo photos sample1-6 (eyes 40.1/73.6 at y 53.2/54.3,
# nose base 54.2, 81.1), made mirror-symmetric about the template's midline x = 56.0.
DLIB5_TEMPLATE = np.array([[39.2, 53.7], [72.8, 53.7], [56.0, 81.1]], dtype=np.float64)
INPUT_MEAN = 127.5
INPUT_STD = 127.5
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class Aligned:
    """One face's 112x112x3 uint8 RGB crop, the 2x3 matrix that took frame pixels into it, and the
    root mean square distance (crop pixels) between the mapped reference points and the template."""

    crop: np.ndarray
    matrix: np.ndarray
    residual: float


def reference_points(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(points in the frame, the same points in the crop) for dlib's 68- or 5-point landmarks."""
    points = np.asarray(points, dtype=np.float64)
    if len(points) == 68:
        eyes = [points[36:42].mean(axis=0), points[42:48].mean(axis=0)]
        return np.array([*eyes, points[30], points[48], points[54]]), ARCFACE_TEMPLATE
    if len(points) == 5:
        # dlib's 5-point order: image-right eye (outer, inner corner), image-left eye (outer, inner), nose base.
        eyes = [points[2:4].mean(axis=0), points[0:2].mean(axis=0)]
        return np.array([*eyes, points[4]]), DLIB5_TEMPLATE
    raise ValueError(f"expected dlib's 5 or 68 landmarks, got {len(points)}")


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, shift; no reflection) that maps ``source``
    points onto ``target`` points with the least squared error (Umeyama, 1991)."""
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    centred_source, centred_target = source - source_mean, target - target_mean
    variance = float((centred_source**2).sum()) / len(source)
    if variance < 1e-12:
        raise ValueError("the source points coincide; no similarity transform is defined")
    u, singular, vt = np.linalg.svd(centred_target.T @ centred_source / len(source))
    signs = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
    rotation = u @ np.diag(signs) @ vt
    scale = float((singular * signs).sum()) / variance
    shift = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, shift[:, None]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points`` (n, 2) mapped by the 2x3 affine ``matrix``."""
    return np.asarray(points, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]


def align(pixels: np.ndarray, points: np.ndarray) -> Aligned:
    """The ArcFace crop of the face whose dlib landmarks are ``points``, from (h, w, 3) uint8 RGB pixels."""
    import cv2

    source, template = reference_points(points)
    matrix = similarity_transform(source, template)
    crop = cv2.warpAffine(pixels, matrix, (CROP_SIDE, CROP_SIDE), flags=cv2.INTER_LINEAR, borderValue=0.0)
    residual = float(np.sqrt(((apply(matrix, source) - template) ** 2).sum(axis=1).mean()))
    return Aligned(crop=crop, matrix=matrix, residual=residual)


def to_input(crops: np.ndarray, mean: float = INPUT_MEAN, std: float = INPUT_STD) -> np.ndarray:
    """(n, 112, 112, 3) uint8 RGB crops as the model's (n, 3, 112, 112) float32 input."""
    return np.ascontiguousarray(((crops.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2))


def providers_available() -> list[str]:
    """CUDA first when this onnxruntime build has it, then the CPU."""
    import onnxruntime

    return [CUDA, CPU] if CUDA in onnxruntime.get_available_providers() else [CPU]


class ArcFaceEmbedder:
    """dlib detection and landmarks, similarity alignment, ArcFace ONNX descriptors. Build it with :meth:`load`."""

    def __init__(
        self,
        locator: FaceEmbedder,
        session: Any,
        *,
        model_id: str,
        dim: int,
        fixed_batch: int | None,
        batch_size: int = 32,
        input_mean: float = INPUT_MEAN,
        input_std: float = INPUT_STD,
    ) -> None:
        self._locator = locator
        self._session = session
        self._input_name: str = session.get_inputs()[0].name
        self.model_id = model_id
        self.dim = dim
        self.fixed_batch = fixed_batch
        self.batch_size = fixed_batch or batch_size
        self.input_mean = input_mean
        self.input_std = input_std

    @classmethod
    def load(
        cls,
        onnx_path: Path | str | None,
        *,
        detector: Literal["hog", "cnn"] = "hog",
        upsample: int = 1,
        landmarks: Literal[5, 68] = 68,
        model_dir: Path | None = None,
        providers: Sequence[str] | None = None,
        batch_size: int = 32,
        input_mean: float = INPUT_MEAN,
        input_std: float = INPUT_STD,
    ) -> ArcFaceEmbedder:
        """``onnx_path``: an insightface-style ArcFace model (input (batch, 3, 112, 112), output
        (batch, dim)); a fixed batch dimension is honoured by padding. ``input_mean``/``input_std``:
        0 and 1 for models that normalise inside the graph (some converted from MXNet).
        ``detector``, ``upsample``, ``model_dir`` as in :meth:`FaceEmbedder.load`."""
        import onnxruntime

        started = time.perf_counter()
        path = _onnx_file(onnx_path)
        session = onnxruntime.InferenceSession(str(path), providers=list(providers or providers_available()))
        fixed_batch = _check_input(session, path)
        dim = _output_dim(session, fixed_batch or 1, path)
        locator = FaceEmbedder.load(detector=detector, upsample=upsample, landmarks=landmarks, model_dir=model_dir)
        embedder = cls(
            locator,
            session,
            model_id=f"arcface/{path.stem}/{dim}",
            dim=dim,
            fixed_batch=fixed_batch,
            batch_size=batch_size,
            input_mean=input_mean,
            input_std=input_std,
        )
        logger.info(
            "loaded ArcFace %s (%d-d, batch %s) on %s with %d-point alignment in %.1fs",
            path,
            dim,
            fixed_batch or "dynamic",
            session.get_providers()[0],
            landmarks,
            time.perf_counter() - started,
        )
        return embedder

    def faces(self, image: Image.Image, max_faces: int = 20, min_score: float = 0.0) -> list[Face]:
        """Faces in the image, best first, with unit descriptors."""
        return self.faces_many([image], max_faces, min_score)[0]

    def faces_many(
        self, images: Sequence[Image.Image], max_faces: int = 20, min_score: float = 0.0
    ) -> list[list[Face]]:
        """:meth:`faces` for each image, all their faces embedded in shared model batches."""
        found = [self.aligned(image, max_faces, min_score) for image in images]
        crops = [a.crop for faces in found for _, a in faces]
        descriptors = iter(self.embed_crops(np.stack(crops)) if crops else [])
        return [[Face(box=f.box, score=f.score, descriptor=next(descriptors)) for f, _ in faces] for faces in found]

    def aligned(
        self, image: Image.Image, max_faces: int = 20, min_score: float = 0.0
    ) -> list[tuple[LocatedFace, Aligned]]:
        """Each detected face, best first, with its ArcFace crop."""
        located = self._locator.locate(image, max_faces, min_score)
        if not located:
            return []
        pixels = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
        return [(face, align(pixels, face.points)) for face in located]

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """(n, 112, 112, 3) uint8 RGB aligned crops into (n, dim) float32 unit descriptors."""
        if crops.ndim != 4 or crops.shape[1:] != (CROP_SIDE, CROP_SIDE, 3):
            raise ValueError(f"expected (n, {CROP_SIDE}, {CROP_SIDE}, 3) crops, got {crops.shape}")
        inputs = to_input(crops, self.input_mean, self.input_std)
        chunks = [self._run(inputs[i : i + self.batch_size]) for i in range(0, len(inputs), self.batch_size)]
        descriptors = np.concatenate(chunks).astype(np.float32, copy=False)
        return descriptors / np.maximum(np.linalg.norm(descriptors, axis=1, keepdims=True), 1e-12)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One model call; a fixed-batch model gets zero rows to fill its batch, dropped after."""
        count = len(batch)
        if self.fixed_batch is not None and count < self.fixed_batch:
            padding = np.zeros((self.fixed_batch - count, *batch.shape[1:]), dtype=batch.dtype)
            batch = np.concatenate([batch, padding])
        (output,) = self._session.run([self._session.get_outputs()[0].name], {self._input_name: batch})
        return np.asarray(output).reshape(len(batch), -1)[:count]


def _onnx_file(onnx_path: Path | str | None) -> Path:
    if onnx_path is None:
        raise ValueError("faces.backend=arcface needs an ArcFace ONNX file: set MEDIAVEC_FACES__ARCFACE_ONNX")
    path = Path(onnx_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"ArcFace ONNX model not found: {path} (MEDIAVEC_FACES__ARCFACE_ONNX)")
    return path


def _check_input(session: Any, path: Path) -> int | None:
    """The model's fixed batch size, or None when the batch dimension is dynamic; raises on any
    input other than (batch, 3, 112, 112) float."""
    inputs = session.get_inputs()
    shape = list(inputs[0].shape)
    expected = [3, CROP_SIDE, CROP_SIDE]
    if len(inputs) != 1 or len(shape) != 4 or shape[1:] != expected or inputs[0].type != "tensor(float)":
        found = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
        raise ValueError(f"{path}: expected one float input of shape (batch, 3, 112, 112), found {found}")
    return shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None


def _output_dim(session: Any, batch: int, path: Path) -> int:
    """The descriptor width: from the declared output shape, else from one run on a blank batch."""
    output = session.get_outputs()[0]
    if len(output.shape) == 2 and isinstance(output.shape[1], int):
        return int(output.shape[1])
    blank = np.zeros((batch, 3, CROP_SIDE, CROP_SIDE), dtype=np.float32)
    (result,) = session.run([output.name], {session.get_inputs()[0].name: blank})
    if np.asarray(result).ndim != 2:
        raise ValueError(f"{path}: expected a (batch, dim) output, got shape {np.asarray(result).shape}")
    return int(np.asarray(result).shape[1])

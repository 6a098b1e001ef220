"""Faces in frames with dlib: a HOG (or CNN) detector, 5-point alignment, 128-d ResNet descriptors.

The model files come from the ``face-recognition-models`` package (``models/*.dat``), found with
``importlib.util.find_spec`` so its ``pkg_resources`` import never runs. Descriptors are
unit-normalised float32, so cosine similarity is a dot product; dlib's own rule of thumb (same
person under a Euclidean distance of 0.6 on the raw descriptors) does not carry over unchanged.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from models.geometry import Box, clip_box

logger = logging.getLogger(__name__)

MODELS_PACKAGE = "face_recognition_models"
DESCRIPTOR_DIM = 128
SHAPE_FILES = {5: "shape_predictor_5_face_landmarks.dat", 68: "shape_predictor_68_face_landmarks.dat"}
RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CNN_FILE = "mmod_human_face_detector.dat"


@dataclass(frozen=True)
class Face:
    """One face: its box in pixels, the detector's score, and a (128,) float32 unit descriptor."""

    box: Box
    score: float
    descriptor: np.ndarray


@dataclass(frozen=True)
class LocatedFace:
    """One detected face before any descriptor: its box, the detector's score and dlib's landmarks
    as an ``(n, 2)`` float32 array of pixel coordinates (n = 5 or 68, in dlib's point order)."""

    box: Box
    score: float
    points: np.ndarray


def default_model_dir() -> Path:
    """The ``models`` folder of face-recognition-models, located without importing it."""
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("no face models: install face-recognition-models==0.3.0 and dlib-bin")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _model_file(model_dir: Path, name: str) -> str:
    path = model_dir / name
    if not path.is_file():
        raise FileNotFoundError(f"face model file missing: {path}")
    return str(path)


class FaceEmbedder:
    """dlib's detector, shape predictor and recognition model. Build it with :meth:`load`."""

    def __init__(self, detector: Any, shape_predictor: Any, recogniser: Any, *, cnn: bool, upsample: int) -> None:
        self._detector = detector
        self._shape_predictor = shape_predictor
        self._recogniser = recogniser
        self.cnn = cnn
        self.upsample = upsample
        self.model_id = "dlib/face_recognition_resnet_v1/128"

    @classmethod
    def load(
        cls,
        *,
        detector: Literal["hog", "cnn"] = "hog",
        upsample: int = 1,
        landmarks: Literal[5, 68] = 5,
        model_dir: Path | None = None,
    ) -> FaceEmbedder:
        """``upsample`` doubles the frame that many times before detection (finds smaller faces,
        costs about 4x per step); the CNN detector is far slower on a CPU than HOG."""
        import dlib

        started = time.perf_counter()
        folder = model_dir or default_model_dir()
        if detector == "cnn":
            face_detector = dlib.cnn_face_detection_model_v1(_model_file(folder, CNN_FILE))
        else:
            face_detector = dlib.get_frontal_face_detector()
        embedder = cls(
            face_detector,
            dlib.shape_predictor(_model_file(folder, SHAPE_FILES[landmarks])),
            dlib.face_recognition_model_v1(_model_file(folder, RECOGNITION_FILE)),
            cnn=detector == "cnn",
            upsample=upsample,
        )
        logger.info("loaded dlib faces (%s detector) from %s in %.1fs", detector, folder, time.perf_counter() - started)
        return embedder

    def faces(self, image: Image.Image, max_faces: int = 20, min_score: float = 0.0) -> list[Face]:
        """Faces in the image, best first, with unit descriptors."""
        import dlib

        pixels = _pixels(image)
        found = self._found(pixels, max_faces, min_score)
        if not found:
            return []
        shapes = dlib.full_object_detections()
        for rect, _ in found:
            shapes.append(self._shape_predictor(pixels, rect))
        descriptors = np.asarray(self._recogniser.compute_face_descriptor(pixels, shapes), dtype=np.float32)
        descriptors /= np.maximum(np.linalg.norm(descriptors, axis=1, keepdims=True), 1e-12)
        height, width = pixels.shape[:2]
        return [
            Face(box=clip_box((r.left(), r.top(), r.right(), r.bottom()), width, height), score=s, descriptor=d)
            for (r, s), d in zip(found, descriptors, strict=True)
        ]

    def locate(self, image: Image.Image, max_faces: int = 20, min_score: float = 0.0) -> list[LocatedFace]:
        """Faces in the image, best first, with the loaded shape predictor's landmarks (no descriptor),
        for backends that align and embed faces themselves."""
        pixels = _pixels(image)
        height, width = pixels.shape[:2]
        located = []
        for rect, score in self._found(pixels, max_faces, min_score):
            shape = self._shape_predictor(pixels, rect)
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
            box = clip_box((rect.left(), rect.top(), rect.right(), rect.bottom()), width, height)
            located.append(LocatedFace(box=box, score=score, points=points))
        return located

    def _found(self, pixels: np.ndarray, max_faces: int, min_score: float) -> list[tuple[Any, float]]:
        """Detections scoring at least ``min_score``, best first, at most ``max_faces``."""
        found = sorted(self._detect(pixels), key=lambda rs: rs[1], reverse=True)
        return [(r, s) for r, s in found if s >= min_score][:max_faces]

    def _detect(self, pixels: np.ndarray) -> list[tuple[Any, float]]:
        """(dlib rectangle, score) pairs from whichever detector is loaded."""
        if self.cnn:
            return [(m.rect, float(m.confidence)) for m in self._detector(pixels, self.upsample)]
        rects, scores, _ = self._detector.run(pixels, self.upsample, 0.0)
        return [(r, float(s)) for r, s in zip(rects, scores, strict=True)]


def _pixels(image: Image.Image) -> np.ndarray:
    """The image as a contiguous (h, w, 3) uint8 RGB array, the layout dlib takes."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))

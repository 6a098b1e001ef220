"""Text in frames with PP-OCR (det + cls + rec ONNX models bundled in rapidocr-onnxruntime)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from models.geometry import Box, clip_box

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextRead:
    """One line of text: the string, its axis-aligned box in pixels, and the recogniser's score."""

    text: str
    box: Box
    score: float


class OcrReader:
    """One loaded RapidOCR engine. Build it with :meth:`load`, once per worker process."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.model_id = "rapidocr/PP-OCRv4"

    @classmethod
    def load(cls, *, threads: int = 0) -> OcrReader:
        """``threads`` is onnxruntime's intra-op thread count per model (0: its default)."""
        from rapidocr_onnxruntime import RapidOCR

        started = time.perf_counter()
        engine = RapidOCR(**({"intra_op_num_threads": threads} if threads > 0 else {}))
        logger.info("loaded PP-OCR (rapidocr-onnxruntime) in %.1fs", time.perf_counter() - started)
        return cls(engine)

    def read(self, image: Image.Image, min_score: float = 0.5) -> list[TextRead]:
        """Lines of text, top to bottom as PP-OCR orders them, scored at least ``min_score``."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        # An ndarray would be taken as BGR; a PIL image is converted by rapidocr itself.
        result, _ = self.engine(rgb)
        if not result:
            return []
        reads = []
        for quad, text, score in result:
            if float(score) < min_score or not str(text).strip():
                continue
            points = np.asarray(quad, dtype=np.float32)
            box = clip_box((points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()), *rgb.size)
            reads.append(TextRead(text=str(text), box=box, score=float(score)))
        return reads

"""Constants and frame comparison shared by the video tests (see tests/unit/test_video_decode.py)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

CODECS = ("h264", "hevc", "vp9", "av1")
PIECE_START_S = 20.0
PIECE_S = 3.0
SAME_FRAME_MAX_DIFF = 1.3
REPO_MEDIA = Path(__file__).resolve().parents[2] / ".mediavec" / "testmedia"


def grey(jpeg: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(jpeg)) as im:
        return np.asarray(im.convert("L").resize((192, 144), Image.Resampling.BOX), dtype=np.float32)


def diff(a: bytes, b: bytes) -> float:
    """Mean absolute difference of two frames as 192x144 greyscale (0-255)."""
    return float(np.abs(grey(a) - grey(b)).mean())

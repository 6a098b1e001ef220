"""A frame's thumbnail: a small JPEG of the image the embed stage already decoded.

The search service shows it beside each hit (sink-postgres keeps it per frame). It is made from
the decoded frame, never by decoding the JPEG again: a reducing resize (box-filter steps, then
bicubic for the last factor of two, what ``Image.thumbnail`` does) and a plain baseline encode
cost about a millisecond for a 1024 px frame, well under the decode itself.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from PIL import Image

from schemas.limits import MAX_THUMBNAIL_BYTES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameView:
    """What every vector batch of a frame says about its image: its size, and (once) its thumbnail."""

    width: int
    height: int
    thumbnail: bytes | None = None


def thumbnail_size(width: int, height: int, side: int) -> tuple[int, int]:
    """``width x height`` scaled so the longest side is ``side``; never enlarged, never below 1 px."""
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def thumbnail_jpeg(image: Image.Image, side: int, quality: int) -> bytes | None:
    """A baseline JPEG of ``image`` with its longest side at most ``side``; None when ``side`` is 0.

    None, with a warning, also for a JPEG over the schema's limit (a decoder would refuse the
    whole vector batch that carried it); the settings bound ``side`` so that this stays rare.
    """
    if side <= 0:
        return None
    size = thumbnail_size(*image.size, side)
    small = image if size == image.size else image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=quality, optimize=False, progressive=False)
    data = buf.getvalue()
    if len(data) > MAX_THUMBNAIL_BYTES:
        logger.warning("a %dx%d thumbnail is %d bytes, over %d: left out", *size, len(data), MAX_THUMBNAIL_BYTES)
        return None
    return data


def frame_view(image: Image.Image, side: int, quality: int) -> FrameView:
    """The decoded frame's size (the pixel space of its boxes) and its thumbnail."""
    return FrameView(image.size[0], image.size[1], thumbnail_jpeg(image, side, quality))

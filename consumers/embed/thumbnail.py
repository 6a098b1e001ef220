"""A frame's thumbnail: a small JPEG of the image the embed stage already decoded.

The search service shows it beside each hit (sink-postgres keeps it per frame). It is made from
the decoded frame, never by decoding the JPEG again, by :func:`models.images.thumbnail_jpeg` (the
same small JPEG a remote provider is sent): about a millisecond for a 1024 px frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from PIL import Image

from models.images import thumbnail_jpeg, thumbnail_size
from schemas.limits import MAX_THUMBNAIL_BYTES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameView:
    """What every vector batch of a frame says about its image: its size, and (once) its thumbnail."""

    width: int
    height: int
    thumbnail: bytes | None = None


def frame_thumbnail(image: Image.Image, side: int, quality: int) -> bytes | None:
    """The frame's thumbnail (:func:`models.images.thumbnail_jpeg`); None when ``side`` is 0.

    None, with a warning, also for a JPEG over the schema's limit (a decoder would refuse the
    whole vector batch that carried it); the settings bound ``side`` so that this stays rare.
    """
    if side <= 0:
        return None
    data = thumbnail_jpeg(image, side, quality)
    if len(data) > MAX_THUMBNAIL_BYTES:
        size = thumbnail_size(*image.size, side)
        logger.warning("a %dx%d thumbnail is %d bytes, over %d: left out", *size, len(data), MAX_THUMBNAIL_BYTES)
        return None
    return data


def frame_view(image: Image.Image, size: tuple[int, int], side: int, quality: int) -> FrameView:
    """The frame's full ``size`` (the pixel space of its boxes; ``image`` may be decoded smaller) and
    its thumbnail."""
    return FrameView(size[0], size[1], frame_thumbnail(image, side, quality))

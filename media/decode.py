"""Downloaded bytes to a bounded RGB baseline JPEG, safely.

The format is identified from the bytes (Pillow reads the magic number), never from the server's
Content-Type. The pixel count is read from the header and checked before any pixel is decoded
(pixel bombs); truncated files are errors, never padded with grey (``LOAD_TRUNCATED_IMAGES`` is
left off). EXIF orientation is applied, colour is converted to sRGB-ish RGB (alpha composited on
white), the long side is bounded and the result is re-encoded as a baseline JPEG.

CPU-bound and thread-safe: the fetch stage runs :func:`decode_image` in an executor.
"""

from __future__ import annotations

import hashlib
import io
import logging
import struct
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageOps

from media.settings import FetchSettings

logger = logging.getLogger(__name__)

# Formats a media URL may hold. MPO is what many phone cameras write (a JPEG with extra frames).
FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF")
# media.frames accepts 8 MiB messages; leave room for the rest of the Avro record.
MAX_JPEG_BYTES = 7 * 1024 * 1024
_FALLBACK_QUALITIES = (80, 70, 55, 40)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SRGB = ImageCms.createProfile("sRGB")
_EXIF_ORIENTATION = 0x0112
cv2.setNumThreads(1)  # the fetch stage decodes in its own thread pool; no second pool per resize


class DecodeError(Exception):
    """Bytes that can never become a frame; ``error_class`` is stable and machine-readable."""

    def __init__(self, error_class: str, reason: str) -> None:
        super().__init__(f"{error_class}: {reason}")
        self.error_class = error_class
        self.reason = reason


@dataclass(frozen=True)
class DecodedImage:
    jpeg: bytes
    width: int
    height: int
    content_sha256: str  # of the downloaded bytes, not of the re-encoded JPEG
    source_format: str
    reencoded: bool = True  # False: the source JPEG is the frame, byte for byte


def decode_image(data: bytes, settings: FetchSettings) -> DecodedImage:
    """Decode ``data`` into a JPEG frame bounded by ``settings.max_side`` and ``settings.max_pixels``."""
    if not data:
        raise DecodeError("empty_body", "no bytes to decode")
    digest = hashlib.sha256(data).hexdigest()
    with _open(data, settings.max_pixels) as im:
        fmt = im.format or "unknown"
        if _as_is(im, data, settings.max_side):
            width, height = im.size  # before draft mode shrinks them
            _verify(im)
            return DecodedImage(data, width, height, digest, fmt, reencoded=False)
        _draft(im, settings.max_side)
        _load(im)
        _orient(im)
        rgb = _bound(_to_rgb(im), settings.max_side)  # inside: closing ``im`` invalidates its pixels
        jpeg = _encode_jpeg(rgb, settings.jpeg_quality)
    return DecodedImage(jpeg=jpeg, width=rgb.width, height=rgb.height, content_sha256=digest, source_format=fmt)


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Identify the format and read the header only; refuse pixel bombs before decoding."""
    try:
        im = identify(data)
    except Image.DecompressionBombError as exc:
        raise DecodeError("pixel_bomb", f"header claims too many pixels ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as exc:
        raise DecodeError("corrupt_image", f"unreadable image header: {exc}") from None
    if im is None:
        raise DecodeError("not_an_image", f"bytes are not a supported image ({_sniff(data)})")
    width, height = im.size
    if width <= 0 or height <= 0:
        im.close()
        raise DecodeError("corrupt_image", f"image claims {width}x{height} pixels")
    if width * height > max_pixels:
        im.close()
        raise DecodeError("pixel_bomb", f"{width}x{height} = {width * height} pixels, over {max_pixels}")
    return im


def identify(data: bytes) -> Image.Image | None:
    """What ``Image.open(fp, formats=FORMATS)`` does, through Pillow's plugin registry.

    ``PIL.Image.open`` itself is not called because libraries replace it: importing ultralytics
    patches it to install a HEIF plugin (pip, at run time) whenever a file is unidentified.
    """
    prefix = data[:16]
    for fmt in _formats():
        factory, accept = Image.OPEN[fmt]
        matched = accept(prefix) if accept is not None else True
        if not matched or isinstance(matched, str):  # a str is Pillow's "almost, but no" warning
            continue
        try:
            return factory(io.BytesIO(data), "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue  # the magic matched but this plugin cannot parse it: try the next one
    return None


@cache
def _formats() -> tuple[str, ...]:
    """FORMATS whose plugins this Pillow build has registered."""
    Image.init()
    return tuple(f for f in FORMATS if f in Image.OPEN)


def _sniff(data: bytes) -> str:
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<svg")):
        return "looks like HTML/XML"
    return f"starts with {data[:8].hex()}"


def _as_is(im: Image.Image, data: bytes, max_side: int) -> bool:
    """Whether the source JPEG can be the frame unchanged: what re-encoding would make, bar quality.

    A baseline (not progressive, single image) 3-channel JPEG within ``max_side``, with no EXIF
    rotation and no colour profile other than sRGB, and small enough for the frames topic.
    """
    if im.format != "JPEG" or im.mode != "RGB" or max(im.size) > max_side or len(data) > MAX_JPEG_BYTES:
        return False
    if im.info.get("progressive") or not _srgb_or_none(im.info.get("icc_profile")):
        return False
    try:
        orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a malformed EXIF block: take the general path, which ignores it
        return False
    return orientation in (1, None)


def _srgb_or_none(icc: bytes | None) -> bool:
    """No ICC profile, or one that names sRGB: converting to sRGB would change nothing."""
    if not icc:
        return True
    try:
        description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return False
    return description.strip().lower().startswith("srgb")


def _verify(im: Image.Image) -> None:
    """Read all of a JPEG's coded data at 1/8 scale: truncation and corruption are refused as ever."""
    im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
    _load(im)


def _draft(im: Image.Image, max_side: int) -> None:
    """Let libjpeg decode big JPEGs at 1/2, 1/4 or 1/8 scale: never below the final size."""
    if im.format not in ("JPEG", "MPO") or max(im.size) <= max_side:
        return
    scale = max_side / max(im.size)
    im.draft(None, (max(1, round(im.width * scale)), max(1, round(im.height * scale))))


def _load(im: Image.Image) -> None:
    try:
        im.load()
    except Image.DecompressionBombError as exc:
        raise DecodeError("pixel_bomb", str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        message = str(exc)
        if "truncated" in message.lower() or isinstance(exc, EOFError):
            raise DecodeError("truncated_image", f"image data ends early: {message}") from None
        raise DecodeError("corrupt_image", f"undecodable image data: {message}") from None


def _orient(im: Image.Image) -> None:
    """Apply the EXIF orientation in place (an upright image is not copied, as ``exif_transpose``
    without ``in_place`` would); a broken EXIF block leaves it as stored."""
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except Exception as exc:  # Pillow raises several types on malformed EXIF
        logger.debug("ignoring unreadable EXIF orientation: %s", exc)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any mode to 8-bit RGB: ICC to sRGB, alpha on white, 16-bit and float scaled down."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        im = _high_depth_to_l(im)
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    im = _icc_to_srgb(im)
    if im.mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode != "RGB":
        try:
            return im.convert("RGB")
        except (ValueError, OSError) as exc:
            raise DecodeError("unsupported_image", f"cannot convert mode {im.mode} to RGB: {exc}") from None
    return im


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float greyscale to 8 bits by scaling, not clipping (PIL clips)."""
    arr = np.asarray(im)
    if im.mode == "F":
        arr = arr.astype(np.float64)
        peak = float(np.nanmax(arr)) if arr.size else 0.0
        scaled = arr * 255.0 if peak <= 1.0 else arr
    else:
        arr = arr.astype(np.int64)
        peak = int(arr.max()) if arr.size else 0
        scaled = arr / 257.0 if im.mode.startswith("I;16") or peak > 255 else arr
    return Image.fromarray(np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8), mode="L")


def _icc_to_srgb(im: Image.Image) -> Image.Image:
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK", "L"):
        return im
    out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(im, src, _SRGB, outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        logger.debug("ignoring unusable ICC profile: %s", exc)
        return im
    return converted if converted is not None else im


def _bound(im: Image.Image, max_side: int) -> Image.Image:
    """The long side down to ``max_side``: box-filter halvings while 2x or more remain, then bicubic.

    The box steps (Pillow's ``reduce``) keep the result free of aliasing; the last factor, under
    2, is OpenCV's bicubic resize, which is what a Lanczos resize costs several times over.
    """
    if max(im.size) <= max_side:
        return im
    scale = max_side / max(im.size)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    factor = int(1 / scale)
    if factor >= 2:
        im = im.reduce(factor)
    if im.size == size:
        return im
    return Image.fromarray(cv2.resize(np.asarray(im), size, interpolation=cv2.INTER_CUBIC))


def _encode_jpeg(im: Image.Image, quality: int) -> bytes:
    for q in (quality, *(q for q in _FALLBACK_QUALITIES if q < quality)):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=q, progressive=False, optimize=False)
        if buf.tell() <= MAX_JPEG_BYTES:
            return buf.getvalue()
    raise DecodeError("frame_too_large", f"JPEG over {MAX_JPEG_BYTES} bytes even at low quality")

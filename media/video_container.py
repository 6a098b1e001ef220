"""Opening a video source with PyAV, and FFmpeg's failures as :class:`DecodeError` reasons.

A source is bytes, a path, or a seekable binary file object (``read``/``seek``/``tell``); a file
object is borrowed, never closed here. Bytes that start like a known container but will not open
are a truncated video; anything else that will not open is not a video.
"""

from __future__ import annotations

import io
import os
from typing import Protocol, runtime_checkable

import av
import av.container
import av.error
import av.video.stream

from media.decode import DecodeError


@runtime_checkable
class Readable(Protocol):
    """A seekable binary file object."""

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def tell(self) -> int: ...


Source = bytes | str | os.PathLike[str] | Readable

# Container magic numbers: bytes that start like a video but do not open are broken, not foreign.
_VIDEO_MAGIC: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"),  # MP4 / MOV / 3GP
    (4, b"moov"),
    (4, b"mdat"),
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (8, b"AVI "),  # RIFF AVI
    (0, b"OggS"),
    (0, b"FLV"),
    (0, b"\x00\x00\x01\xba"),  # MPEG-PS
    (0, b"\x47"),  # MPEG-TS sync byte (too weak alone: see _looks_like_video)
)


def open_container(source: Source) -> av.container.InputContainer:
    head = source[:16] if isinstance(source, bytes) else _head(source)
    if isinstance(source, bytes) and not source:
        raise DecodeError("empty_body", "no bytes to decode")
    try:
        return av.open(_target(source), mode="r", metadata_errors="ignore")
    except FileNotFoundError as exc:
        raise DecodeError("not_found", f"no such file: {exc.filename}") from None
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        if _looks_like_video(head):
            raise DecodeError("truncated_video", f"container will not open ({exc}); file cut short?") from None
        raise DecodeError("not_a_video", f"bytes are not a readable video (starts with {head[:8].hex()})") from None


def _target(source: Source) -> str | Readable:
    if isinstance(source, bytes):
        return io.BytesIO(source)
    if isinstance(source, Readable):
        source.seek(0)
        return _Borrowed(source)
    return os.fspath(source)


class _Borrowed:
    """A file object PyAV reads but cannot close (it closes its file when the container closes)."""

    def __init__(self, inner: Readable) -> None:
        self.read, self.seek, self.tell = inner.read, inner.seek, inner.tell

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


def _head(path: str | os.PathLike[str] | Readable) -> bytes:
    if isinstance(path, Readable):
        path.seek(0)
        head = path.read(16)
        path.seek(0)
        return head
    try:
        with open(path, "rb") as fh:
            return fh.read(16)
    except OSError:
        return b""


def _looks_like_video(head: bytes) -> bool:
    if head[:1] == b"\x47":
        return False  # one TS sync byte alone is too weak to call the bytes a video
    return any(head[offset : offset + len(magic)] == magic for offset, magic in _VIDEO_MAGIC)


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    name = container.format.name
    if name.endswith("_pipe") or name == "image2":
        raise DecodeError("not_a_video", f"a still image ({name}), not a video")  # animated GIF passes
    if not container.streams.video:
        raise DecodeError("not_a_video", f"no video stream in {name}")
    return container.streams.video[0]


def classify(exc: av.error.FFmpegError) -> DecodeError:
    if isinstance(exc, EOFError):
        return DecodeError("truncated_video", f"video data ends early: {exc}")
    return DecodeError("corrupt_video", f"undecodable video data: {exc}")

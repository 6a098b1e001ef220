"""Where a video's bytes come from: HTTP byte ranges, or a local file under ``fetch.allow_paths``.

:class:`HttpRangeFile` is a seekable, read-only file object that PyAV opens like a local file.
Each cache miss becomes one HTTP ``Range`` request of ``block_bytes`` through the shared
:class:`~media.download.Downloader`, so the SSRF guard, allow-lists, retries, deadlines
and byte caps apply to every request; recent blocks are kept (LRU, ``cache_bytes``), so the
decoder's small reads and seeks back to a keyframe cost nothing. The file is opened and read in a
worker thread (the decoder's): each request is submitted to the downloader's event loop and
waited for, which is why doing so on that loop's own thread is refused (it would wait for
itself). Opening there also bounds memory: only the videos being decoded hold blocks. A server
that ignores ``Range`` answers the first request with the whole body (bounded by ``max_bytes``),
which is then served from memory. ``max_total_bytes`` bounds what one file may download in all.

A failed read does not raise into FFmpeg: the file records the :class:`FetchError`, reports end
of file, and the caller reads :attr:`HttpRangeFile.error`. So the frames decoded before a
download broke are kept, as with a truncated file.

:func:`open_local` opens a ``file://`` URL only when the file it actually opened (symlinks and
``..`` resolved) lies under one of the allowed directories.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import os
import stat
from collections import OrderedDict
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import unquote, urlsplit

from media.download import Downloader, FetchError, RangePart, redact_url

logger = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 8 * 1024 * 1024  # per open video: the decoder's short seeks back stay in memory
T = TypeVar("T")


class HttpRangeFile(io.RawIOBase):
    """A read-only, seekable view of an HTTP resource; :meth:`open` it from a worker thread."""

    def __init__(
        self,
        downloader: Downloader,
        url: str,
        loop: asyncio.AbstractEventLoop,
        *,
        block_bytes: int,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_total_bytes: int | None = None,
    ) -> None:
        super().__init__()
        self.url = url
        self.size = 0  # learnt by open(): Content-Range's total, or the whole body's length
        self.error: FetchError | None = None  # the failure that ended reading early, if any
        self.requests = 0
        self.bytes_read = 0  # body bytes received over every request
        self._downloader, self._loop = downloader, loop
        self._block = block_bytes
        self._cache_blocks = max(2, cache_bytes // block_bytes)
        self._budget = max_total_bytes
        self._wait_s = 4 * downloader.settings.total_deadline_s + 30  # past every retry of one request
        self._etag = ""
        self._pos = 0
        self._whole: bytes | None = None
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    def open(self) -> HttpRangeFile:
        """The first range request: learns the size, or takes the whole body from a server without Range.

        Blocks; call it from a worker thread. Raises :class:`FetchError` (refused, 404, ...).
        """
        first = self._fetch(0, self._block)
        if not first.whole and first.total is None:  # no size given: read it whole, bounded by max_bytes
            whole = self._wait(self._downloader.fetch(self.url))
            first = RangePart(whole.data, 0, len(whole.data), True)
            self.requests += 1
            self.bytes_read += len(whole.data)
        self._etag = first.etag
        if first.whole:
            self._whole, self.size = first.data, len(first.data)
        else:
            self._cache[0], self.size = first.data, int(first.total or 0)
        return self

    @property
    def ranged(self) -> bool:
        """False when the server ignored Range and the whole body was read at once."""
        return self._whole is None

    # -- io.RawIOBase ---------------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence {whence}")
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        memoryview(buffer)[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1, /) -> bytes:
        """Up to ``size`` bytes from the current position; b"" at the end or after a failure."""
        end = self.size if size is None or size < 0 else min(self.size, self._pos + size)
        parts: list[bytes] = []
        while self._pos < end and self.error is None:
            origin = 0 if self._whole is not None else self._pos - self._pos % self._block
            block = self._block_at(origin // self._block)
            if block is None:
                break
            piece = block[self._pos - origin : end - origin]
            if not piece:
                break  # the server sent less than its size said: end of data
            parts.append(piece)
            self._pos += len(piece)
        return b"".join(parts)

    # -- blocks ---------------------------------------------------------------------------------

    def _block_at(self, index: int) -> bytes | None:
        if self._whole is not None:
            return self._whole
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        try:
            data = self._download(index)
        except FetchError as err:
            logger.info("range read of %s failed: %s", redact_url(self.url), err)
            self.error = err
            return None
        self._cache[index] = data
        while len(self._cache) > self._cache_blocks:
            self._cache.popitem(last=False)
        return data

    def _download(self, index: int) -> bytes:
        start = index * self._block
        end = min(self.size, start + self._block)
        if self._budget is not None and self.bytes_read + (end - start) > self._budget:
            raise FetchError("too_large", f"reading this video would pass the {self._budget}-byte cap")
        part = self._fetch(start, end)
        if part.whole or (self._etag and part.etag and part.etag != self._etag):
            raise FetchError("source_changed", f"{redact_url(self.url)} changed while it was being read")
        return part.data

    def _fetch(self, start: int, end: int) -> RangePart:
        part = self._wait(self._downloader.fetch_range(self.url, start, end))
        self.requests += 1
        self.bytes_read += len(part.data)
        return part

    def _wait(self, coro: Coroutine[Any, Any, T]) -> T:
        if _running_loop() is self._loop:
            coro.close()
            raise RuntimeError("HttpRangeFile read on its event loop's thread would wait for itself")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=self._wait_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise FetchError("timeout", f"range read of {redact_url(self.url)} took over {self._wait_s}s") from None
        except concurrent.futures.CancelledError:
            raise FetchError("cancelled", "the fetch stage is shutting down") from None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# -- local files ---------------------------------------------------------------------------------


def is_file_url(url: str) -> bool:
    return url[:7].lower() == "file://"


def file_url_path(url: str) -> Path:
    """The absolute path a ``file://`` URL names (``file:///p`` or ``file://localhost/p``)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost"):
        raise FetchError("path_not_allowed", "only file:///absolute/path URLs of this machine are readable")
    if parts.query or parts.fragment:
        raise FetchError("path_not_allowed", "a file:// URL takes no query or fragment")
    path = unquote(parts.path)
    if not path.startswith("/") or "\x00" in path:
        raise FetchError("path_not_allowed", "a file:// URL needs an absolute path")
    return Path(path)


def open_local(url: str, allow_paths: tuple[str, ...]) -> BinaryIO:
    """Open the regular file a ``file://`` URL names, if it really lies under an allowed directory.

    The check is made on the file that was opened (``/proc/self/fd``), not on the URL's text,
    so ``..``, symlinks and a swap between check and open all resolve to where they lead.
    Raises :class:`FetchError`: ``bad_scheme`` when no directory is allowed, ``path_not_allowed``,
    ``not_found``.
    """
    if not allow_paths:
        raise FetchError("bad_scheme", "file:// URLs are disabled (fetch.allow_paths is empty)")
    path = file_url_path(url)
    if not _under(os.path.realpath(path), allow_paths):
        raise FetchError("path_not_allowed", f"{path} is not under fetch.allow_paths")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # NONBLOCK: a FIFO must not hang us
    except FileNotFoundError:
        raise FetchError("not_found", f"no such file: {path}") from None
    except OSError as exc:
        raise FetchError("path_not_allowed", f"{path} cannot be opened: {exc.strerror}") from None
    try:
        _check_opened(fd, path, allow_paths)
    except FetchError:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _check_opened(fd: int, path: Path, allow_paths: tuple[str, ...]) -> None:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise FetchError("path_not_allowed", f"{path} is not a regular file")
    proc = f"/proc/self/fd/{fd}"
    opened = os.readlink(proc) if os.path.exists(proc) else os.path.realpath(path)
    if not _under(opened, allow_paths):
        raise FetchError("path_not_allowed", f"{path} leads outside fetch.allow_paths")


def _under(real: str, allow_paths: tuple[str, ...]) -> bool:
    for allowed in allow_paths:
        root = os.path.realpath(allowed)
        if os.path.commonpath([real, root]) == root:
            return True
    return False


def read_local(url: str, allow_paths: tuple[str, ...], max_bytes: int) -> bytes:
    """The bytes of an allowed local file (an image), bounded like a download."""
    with open_local(url, allow_paths) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FetchError("too_large", f"file over the {max_bytes}-byte cap")
    if not data:
        raise FetchError("empty_body", "the file is empty")
    return data

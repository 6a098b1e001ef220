"""A local HTTP media server for tests, demos and load tests: real sockets, loopback only.

:class:`MediaServer` serves the files of a directory plus routes that misbehave on purpose, so
the fetch stage's failure handling is exercised against a real HTTP stack:

==============================  ===========================================================
``/{name}``                     the file ``root/name``; honours one ``Range`` (206, or 416)
``/norange/{name}``             the whole file, status 200, whatever ``Range`` asks
``/status/{code}/{anything}``   that status code
``/flaky/{n}/{name}``           500 for the first ``n`` requests of ``name``, then the file
``/slow/{seconds}/{name}``      waits, then the file (timeouts)
``/drip/{bytes_per_s}/{name}``  the file, chunked, a few bytes every 0.1 s (deadlines, caps)
``/truncated/{name}``           the first half of the file, status 200, consistent length
``/html/{name}``                an HTML page labelled ``Content-Type: image/jpeg``
``/empty/{name}``               status 200, zero bytes
``/redirect?to=<url>``          302 to ``url`` (``&status=301`` etc. to pick the code)
``/hops/{n}/{name}``            a chain of ``n`` redirects ending at the file
==============================  ===========================================================

Every request is logged (:meth:`MediaServer.hits`), with its ``Range`` header, status and body
size (:attr:`MediaServer.served`, :meth:`MediaServer.bytes_served`); ``keep_log`` bounds the log
to the latest requests for long runs. A subclass adds routes in :meth:`MediaServer.add_routes`
(the load test's server does). :class:`Canary` is a
server on 127.0.0.2 that only counts connections: point a refused redirect at it and assert it
was never reached.
"""

from __future__ import annotations

import asyncio
import mimetypes
import re
import struct
import threading
import zlib
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from aiohttp import web

from mediavec.appserver import AppServer
from streams.loopthread import LoopThread

__all__ = ["Canary", "MediaServer", "Served", "write_pixel_bomb"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
_HTML = b"<!DOCTYPE html><html><head><title>Not an image</title></head><body><p>Hello</p></body></html>\n"


@dataclass(frozen=True)
class Served:
    """One request as the server answered it."""

    path: str  # path and query
    range: str | None  # the Range header as the client sent it
    status: int
    bytes: int  # body bytes (0 for chunked responses)


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``[start, end)`` asked by one ``Range`` header; None to serve the whole file.

    Raises :class:`web.HTTPRequestRangeNotSatisfiable` for a range that starts past the end.
    Several ranges, or syntax this does not know, are ignored (RFC 9110 lets a server do that).
    """
    match = _RANGE.match((header or "").strip())
    if match is None or match.group(0) == "bytes=-":
        return None
    first, last = match.group(1), match.group(2)
    if first:
        start, end = int(first), (int(last) + 1 if last else size)
        if last and int(last) < start:
            return None  # invalid: ignored
    else:
        start, end = max(0, size - int(last)), size  # suffix: the last n bytes
        if int(last) == 0:
            start = size
    if start >= size:
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    return start, min(end, size)


class MediaServer(AppServer):
    """Serve ``root`` and the failure routes on ``host:port`` (port 0 picks a free one)."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0, keep_log: int | None = None) -> None:
        super().__init__(host, port)
        self.root = Path(root).resolve()
        self._lock = threading.Lock()
        self._log: deque[str] = deque(maxlen=keep_log)  # maxlen None: every request
        self._served: deque[Served] = deque(maxlen=keep_log)
        self._flaky: Counter[str] = Counter()
        self._in_flight = 0
        self._max_in_flight = 0

    # -- test helpers -----------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` on this server (``"a.jpg"`` or ``"/status/404/a.jpg"``)."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def hits(self, path: str) -> int:
        """Requests seen for ``path`` (compared with and without the query string)."""
        path = "/" + path.lstrip("/")
        with self._lock:
            return sum(1 for logged in self._log if logged == path or logged.split("?", 1)[0] == path)

    @property
    def request_log(self) -> list[str]:
        """Every request's path and query, in arrival order."""
        with self._lock:
            return list(self._log)

    @property
    def served(self) -> list[Served]:
        """Every answered request with its Range header, status and body size, in order."""
        with self._lock:
            return list(self._served)

    def bytes_served(self, path: str) -> int:
        """Body bytes sent for ``path`` (query ignored), over every request."""
        path = "/" + path.lstrip("/")
        return sum(s.bytes for s in self.served if s.path.split("?", 1)[0] == path)

    @property
    def max_concurrent(self) -> int:
        """The most requests this server was handling at once."""
        with self._lock:
            return self._max_in_flight

    def reset(self) -> None:
        with self._lock:
            self._log.clear()
            self._served.clear()
            self._flaky.clear()
            self._max_in_flight = self._in_flight

    # -- routes -----------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/status/{code:\\d+}/{tail:.*}", self._status)
        app.router.add_get("/flaky/{n:\\d+}/{name:.+}", self._flaky_file)
        app.router.add_get("/slow/{seconds}/{name:.+}", self._slow)
        app.router.add_get("/drip/{rate:\\d+}/{name:.+}", self._drip)
        app.router.add_get("/truncated/{name:.+}", self._truncated)
        app.router.add_get("/norange/{name:.+}", self._whole_file)
        app.router.add_get("/html/{name:.*}", self._html)
        app.router.add_get("/empty/{name:.*}", self._empty)
        app.router.add_get("/redirect", self._redirect)
        app.router.add_get("/hops/{n:\\d+}/{name:.+}", self._hops)
        self.add_routes(app.router)
        app.router.add_get("/{name:.+}", self._file)
        return app

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Subclasses add their routes here; they are matched before the catch-all file route."""

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        with self._lock:
            self._log.append(request.path_qs)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        status, size = 500, 0
        try:
            resp = await handler(request)
            status, size = resp.status, resp.content_length or 0
            return resp
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            with self._lock:
                self._in_flight -= 1
                self._served.append(Served(request.path_qs, request.headers.get("Range"), status, size))

    def _read(self, name: str) -> bytes:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            raise web.HTTPNotFound(text=f"no file {name}\n")
        return path.read_bytes()

    @staticmethod
    def _content_type(name: str) -> str:
        return mimetypes.guess_type(name)[0] or "application/octet-stream"

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        data = self._read(name)
        span = byte_range(request.headers.get("Range"), len(data))
        headers = {"Accept-Ranges": "bytes"}
        if span is None:
            return web.Response(body=data, content_type=self._content_type(name), headers=headers)
        start, end = span
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        return web.Response(status=206, body=data[start:end], content_type=self._content_type(name), headers=headers)

    async def _whole_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return web.Response(body=self._read(name), content_type=self._content_type(name))

    async def _status(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        if not 200 <= code <= 599:
            raise web.HTTPBadRequest(text="status must be 200..599\n")
        body = None if code in (204, 304) else f"status {code}\n"
        return web.Response(status=code, text=body)

    async def _flaky_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        with self._lock:
            self._flaky[name] += 1
            seen = self._flaky[name]
        if seen <= int(request.match_info["n"]):
            return web.Response(status=500, text=f"flaky failure {seen}\n")
        return await self._file(request)

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.match_info["seconds"]))
        return await self._file(request)

    async def _drip(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        data = self._read(name)
        step = max(1, int(request.match_info["rate"]) // 10)
        resp = web.StreamResponse(headers={"Content-Type": self._content_type(name)})
        resp.enable_chunked_encoding()  # no Content-Length: the client only learns the size by reading
        await resp.prepare(request)
        for start in range(0, len(data), step):
            await resp.write(data[start : start + step])
            await asyncio.sleep(0.1)
        await resp.write_eof()
        return resp

    async def _truncated(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        data = self._read(name)
        return web.Response(body=data[: len(data) // 2], content_type=self._content_type(name))

    async def _html(self, request: web.Request) -> web.Response:
        return web.Response(body=_HTML, headers={"Content-Type": "image/jpeg"})

    async def _empty(self, request: web.Request) -> web.Response:
        return web.Response(body=b"", headers={"Content-Type": "image/jpeg"})

    async def _redirect(self, request: web.Request) -> web.Response:
        target = request.query.get("to")
        if not target:
            raise web.HTTPBadRequest(text="missing ?to=\n")
        status = int(request.query.get("status", "302"))
        return web.Response(status=status, headers={"Location": target})

    async def _hops(self, request: web.Request) -> web.Response:
        n, name = int(request.match_info["n"]), request.match_info["name"]
        if n == 0:
            return await self._file(request)
        return web.Response(status=302, headers={"Location": f"/hops/{n - 1}/{name}"})


class Canary:
    """A TCP listener on 127.0.0.2 that counts every connection (and answers HTTP 200).

    127.0.0.0/8 is loopback on Linux, so this needs no privileges; a guard that allows only
    127.0.0.1 must never reach it.
    """

    def __init__(self, host: str = "127.0.0.2", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._hits = 0
        self._lock = threading.Lock()
        self._thread: LoopThread | None = None
        self._server: asyncio.Server | None = None

    @property
    def hits(self) -> int:
        with self._lock:
            return self._hits

    def url(self, path: str = "") -> str:
        return f"http://{self.host}:{self.port}/{path.lstrip('/')}"

    def start(self) -> Canary:
        self._thread = LoopThread("canary").start()
        self._server = self._thread.run(asyncio.start_server(self._on_connect, self.host, self.port), timeout=30)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self._hits += 1
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\ncanary\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._server is not None:
            server = self._server

            async def _close() -> None:
                server.close()
                await server.wait_closed()

            self._thread.run(_close(), timeout=30)
        self._thread.stop()
        self._thread = self._server = None

    def __enter__(self) -> Canary:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def write_pixel_bomb(path: Path, width: int = 30_000, height: int = 30_000) -> Path:
    """Write a small PNG whose header claims ``width`` x ``height`` 1-bit pixels.

    Only the first rows of pixel data are present: a decoder that trusts the header allocates
    ``width * height`` pixels before it notices, which is the attack the fetch stage refuses.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte + packed pixels
    idat = zlib.compress(row * min(height, 64), 9)
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    path = Path(path)
    path.write_bytes(png)
    return path

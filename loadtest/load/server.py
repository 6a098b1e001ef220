"""The load test's media server: :class:`MediaServer` plus one route whose query says how it behaves.

``/load/{name}?seed=S&delay=D&bw=B&fail=F`` serves the file ``name``:

- ``seed``: written into a JPEG comment segment, so every seed is distinct content (the fetch
  stage refuses the same bytes twice as a duplicate); other formats are served as they are.
- ``delay``: seconds before the response starts (the plan draws it from a heavy-tailed model).
- ``bw``: body bytes per second, paced in 50 ms steps with ``Content-Length`` known (bandwidth).
- ``fail``: ``error`` (503), ``timeout`` (no answer until the client gives up), ``truncated``
  (``Content-Length`` of the whole body, half of it sent, then the connection closed) or
  ``drip`` (the body at :data:`DRIP_BPS` bytes/s, so the fetch deadline passes first).

One ``Range`` is honoured (video segments are read by range). ``/_stats`` answers JSON with the
most requests served at once since the last ``/_stats?reset=1``. The failure and the delay are in
the URL rather than drawn by the server, so the load generator knows each media's intended fate
and the report can set the dead letters against the plan.

Run on its own (the load generator does, so serving does not share a GIL with the tracker):
``python -m loadtest.load.server ROOT`` prints its base URL on the first line of stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import struct
import sys
import threading
from pathlib import Path

from aiohttp import web

from devstack.mediaserver import MediaServer, byte_range

__all__ = ["DRIP_BPS", "FAILURES", "LoadMediaServer", "pacing", "stamp_jpeg"]

FAILURES = ("error", "timeout", "truncated", "drip")
DRIP_BPS = 2_000  # slow drip: a 100 kB photo would take 50 s
HANG_S = 3_600.0  # "timeout": longer than any client deadline; cancelled when the client leaves
STEP_S = 0.05  # pacing step of the bandwidth limit


def stamp_jpeg(data: bytes, seed: str) -> bytes:
    """``data`` with a comment segment naming ``seed`` after SOI (JPEG only; others unchanged).

    The pixels are untouched, the bytes (and so their SHA-256) differ per seed.
    """
    if not data.startswith(b"\xff\xd8") or not seed:
        return data
    text = f"mediavec-load seed={seed}".encode()[:60000]
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + data[2:]


class LoadMediaServer(MediaServer):
    """MediaServer with the ``/load/{name}`` route; files are read once and kept in memory."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0, keep_log: int | None = 10_000) -> None:
        super().__init__(root, host, port, keep_log=keep_log)
        self._cache: dict[str, bytes] = {}
        self._cache_lock = threading.Lock()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/load/{name:.+}", self._load)
        router.add_get("/_stats", self._stats)

    async def _stats(self, request: web.Request) -> web.Response:
        body = {"max_concurrent": self.max_concurrent}
        if request.query.get("reset"):
            self.reset()
        return web.json_response(body)

    def _cached(self, name: str) -> bytes:
        with self._cache_lock:
            data = self._cache.get(name)
        if data is None:
            data = self._read(name)
            with self._cache_lock:
                self._cache[name] = data
        return data

    async def _load(self, request: web.Request) -> web.StreamResponse:
        name, q = request.match_info["name"], request.query
        data = stamp_jpeg(self._cached(name), q.get("seed", ""))
        fail = q.get("fail", "")
        if fail and fail not in FAILURES:
            raise web.HTTPBadRequest(text=f"fail must be one of {', '.join(FAILURES)}\n")
        await asyncio.sleep(max(0.0, float(q.get("delay", "0"))))
        if fail == "error":
            return web.Response(status=503, text="planned failure\n")
        if fail == "timeout":
            await asyncio.sleep(HANG_S)
        bw = DRIP_BPS if fail == "drip" else int(float(q.get("bw", "0")))
        return await self._send(request, name, data, bw, cut=fail == "truncated")

    async def _send(self, request: web.Request, name: str, data: bytes, bw: int, *, cut: bool) -> web.StreamResponse:
        span = byte_range(request.headers.get("Range"), len(data))
        headers = {"Accept-Ranges": "bytes", "Content-Type": self._content_type(name)}
        status, body = 200, data
        if span is not None:
            status, body = 206, data[span[0] : span[1]]
            headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{len(data)}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(body)
        await resp.prepare(request)
        if cut:
            await resp.write(body[: len(body) // 2])
            if request.transport is not None:
                request.transport.close()  # the client sees a body shorter than Content-Length
            return resp
        await _paced(resp, body, bw)
        await resp.write_eof()
        return resp


def pacing(size: int, bw: int) -> list[tuple[int, int, float]]:
    """The steps of a body of ``size`` bytes at ``bw`` bytes/s (0: at once): (first byte, end, when).

    A step is written at the moment a link of ``bw`` would have carried its last byte, counted
    from the first, so the body ends at ``size / bw`` and the response with it. (Writing a step
    first and sleeping a whole step after it held every response, however small, at least 50 ms
    after its last byte, and the next request on that keep-alive connection waited for it: that
    slowed a client that reuses connections and no other.)
    """
    if bw <= 0:
        return [(0, size, 0.0)] if size else []
    step = max(1, int(bw * STEP_S))
    return [(lo, min(size, lo + step), min(size, lo + step) / bw) for lo in range(0, size, step)]


async def _paced(resp: web.StreamResponse, body: bytes, bw: int) -> None:
    """Write ``body`` as :func:`pacing` says."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for lo, hi, at in pacing(len(body), bw):
        wait = start + at - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        await resp.write(body[lo:hi])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Serve ROOT with the load routes on loopback until SIGTERM.")
    ap.add_argument("root", type=Path)
    ap.add_argument("--host", default="127.0.0.1", help="a loopback address")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        ap.error(f"{args.host} is not a loopback address")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with LoadMediaServer(args.root, args.host, args.port) as server:
        print(server.base_url, flush=True)  # the parent reads the URL from the first line
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

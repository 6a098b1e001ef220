"""The load server's /load route over real loopback sockets: content per seed, failures, ranges."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from devstack.samples import find_sample_photos
from loadtest.load.server import DRIP_BPS, LoadMediaServer, pacing
from media.download import Downloader, FetchError
from media.settings import FetchSettings

BUS = next(p for p in find_sample_photos()[0] if p.name == "bus.jpg")
FETCH = FetchSettings(allow_cidrs=("127.0.0.1/32",), retries=1, backoff_base_s=0.01, read_timeout_s=1.0)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[LoadMediaServer]:
    shutil.copy(BUS, tmp_path / "bus.jpg")
    (tmp_path / "clip.avi").write_bytes(bytes(range(256)) * 8)
    with LoadMediaServer(tmp_path) as srv:
        yield srv


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _fetch(url: str) -> bytes:
    async def go() -> bytes:
        async with Downloader(FETCH) as d:
            return (await d.fetch(url)).data

    return asyncio.run(go())


def _fetch_error(url: str) -> FetchError:
    with pytest.raises(FetchError) as info:
        _fetch(url)
    return info.value


def test_each_seed_is_distinct_content(server: LoadMediaServer) -> None:
    a = _fetch(server.url("/load/bus.jpg?seed=1&delay=0.01&bw=5000000"))
    b = _fetch(server.url("/load/bus.jpg?seed=2"))
    assert hashlib.sha256(a).digest() != hashlib.sha256(b).digest()
    assert len(a) == len(b) == BUS.stat().st_size + 4 + len(b"mediavec-load seed=1")
    assert a.endswith(BUS.read_bytes()[2:])


def test_planned_failures_reach_the_fetch_stage_as_their_classes(server: LoadMediaServer) -> None:
    assert _fetch_error(server.url("/load/bus.jpg?seed=1&fail=error")).error_class == "http_5xx_exhausted"
    assert _fetch_error(server.url("/load/bus.jpg?seed=1&fail=truncated")).error_class == "connection_failed"
    assert server.hits("/load/bus.jpg") == 4  # two tries each


def test_timeout_never_answers(server: LoadMediaServer) -> None:
    async def go() -> None:
        async with aiohttp.ClientSession() as s:
            await s.get(server.url("/load/bus.jpg?seed=1&fail=timeout"), timeout=aiohttp.ClientTimeout(total=0.3))

    with pytest.raises(TimeoutError):
        asyncio.run(go())


def test_range_and_unknown_failure(server: LoadMediaServer) -> None:
    status, body = _get(server.url("/load/clip.avi?seed=9&bw=100000"), {"Range": "bytes=10-19"})
    assert status == 206 and body == (bytes(range(256)) * 8)[10:20]
    assert _get(server.url("/load/bus.jpg?fail=gremlins"))[0] == 400
    assert _get(server.url("/load/missing.jpg?seed=1"))[0] == 404


def test_stats_report_and_reset_the_peak_concurrency(server: LoadMediaServer) -> None:
    async def burst() -> None:
        async with aiohttp.ClientSession() as s:
            await asyncio.gather(*(s.get(server.url(f"/load/bus.jpg?seed={i}&delay=1")) for i in range(5)))

    _get(server.url("/_stats?reset=1"))
    assert json.loads(_get(server.url("/_stats"))[1])["max_concurrent"] == 1  # itself
    asyncio.run(burst())
    assert json.loads(_get(server.url("/_stats"))[1])["max_concurrent"] == 5


def test_bandwidth_delays_the_bytes_and_ends_with_the_last_one() -> None:
    """Each step leaves when the link would have carried it; nothing waits after the last byte (a
    keep-alive connection's next request would wait for it)."""
    assert pacing(100_000, 8_000_000) == [(0, 100_000, 0.0125)]  # one step, sent at 12.5 ms, and done
    assert pacing(1_000_000, 8_000_000) == [(0, 400_000, 0.05), (400_000, 800_000, 0.1), (800_000, 1_000_000, 0.125)]
    assert pacing(5, 0) == [(0, 5, 0.0)] and pacing(0, 0) == [] and pacing(0, 1000) == []
    drip = pacing(100_000, DRIP_BPS)
    assert drip[-1] == (99_900, 100_000, 50.0) and len(drip) == 1000  # a 100 kB drip takes 50 s, 100 bytes a step

"""The downloader against a real local HTTP server (loopback only): retries, caps, redirects, guard."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from devstack.mediaserver import Canary, MediaServer
from devstack.samples import find_sample_photos
from media.download import Download, Downloader, FetchError, redact_url
from media.settings import FetchSettings
from streams.errors import backoff_s

PHOTOS = {path.name: path for path in find_sample_photos()[0]}
BUS = PHOTOS["bus.jpg"]
LOCAL = ("127.0.0.1/32",)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[MediaServer]:
    shutil.copy(BUS, tmp_path / "bus.jpg")
    with MediaServer(tmp_path) as srv:
        yield srv


@pytest.fixture()
def canary() -> Iterator[Canary]:
    with Canary() as c:
        yield c


def settings(**overrides: object) -> FetchSettings:
    base: dict[str, object] = {"allow_cidrs": LOCAL, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "retries": 2}
    return FetchSettings.model_validate(base | overrides)


def fetch(url: str, s: FetchSettings | None = None) -> Download:
    async def go() -> Download:
        async with Downloader(s or settings()) as downloader:
            return await downloader.fetch(url)

    return asyncio.run(go())


def fetch_error(url: str, s: FetchSettings | None = None) -> FetchError:
    with pytest.raises(FetchError) as info:
        fetch(url, s)
    return info.value


def test_ok(server: MediaServer) -> None:
    async def go() -> tuple[Download, int]:
        async with Downloader(settings()) as downloader:
            result = await downloader.fetch(server.url("bus.jpg"))
            return result, downloader.bytes_downloaded

    result, counted = asyncio.run(go())
    assert result.data == BUS.read_bytes()
    assert (result.status, result.attempts, result.content_type) == (200, 1, "image/jpeg")
    assert result.final_url == server.url("bus.jpg")
    assert counted == BUS.stat().st_size
    assert server.hits("bus.jpg") == 1


def test_404_is_not_retried(server: MediaServer) -> None:
    err = fetch_error(server.url("status/404/bus.jpg"))
    assert err.error_class == "http_404"
    assert server.hits("status/404/bus.jpg") == 1


def test_missing_file_is_404(server: MediaServer) -> None:
    assert fetch_error(server.url("nothere.jpg")).error_class == "http_404"


def test_flaky_500_twice_then_success(server: MediaServer) -> None:
    result = fetch(server.url("flaky/2/bus.jpg"))
    assert result.data == BUS.read_bytes()
    assert result.attempts == 3
    assert server.hits("flaky/2/bus.jpg") == 3


def test_5xx_exhausted(server: MediaServer) -> None:
    err = fetch_error(server.url("status/503/x"), settings(retries=2))
    assert err.error_class == "http_5xx_exhausted"
    assert "3 attempts" in err.reason
    assert server.hits("status/503/x") == 3


def test_429_is_retried(server: MediaServer) -> None:
    err = fetch_error(server.url("status/429/x"), settings(retries=1))
    assert err.error_class == "http_429_exhausted"
    assert server.hits("status/429/x") == 2


def test_read_timeout(server: MediaServer) -> None:
    err = fetch_error(server.url("slow/5/bus.jpg"), settings(read_timeout_s=0.2, retries=0))
    assert err.error_class == "timeout"
    assert server.hits("slow/5/bus.jpg") == 1


def test_total_deadline_stops_retries(server: MediaServer) -> None:
    s = settings(read_timeout_s=0.2, total_deadline_s=0.5, retries=50, backoff_base_s=0.05, backoff_max_s=0.1)
    err = fetch_error(server.url("slow/5/bus.jpg"), s)
    assert err.error_class == "timeout"
    assert 1 <= server.hits("slow/5/bus.jpg") < 51


def test_content_length_over_cap(server: MediaServer) -> None:
    err = fetch_error(server.url("bus.jpg"), settings(max_bytes=10_000))
    assert err.error_class == "too_large"
    assert "Content-Length" in err.reason
    assert server.hits("bus.jpg") == 1


def test_streamed_body_over_cap(server: MediaServer) -> None:
    # /drip sends chunked encoding: no Content-Length, so only the streaming cap can stop it.
    async def go() -> tuple[FetchError, int]:
        async with Downloader(settings(max_bytes=30_000)) as downloader:
            with pytest.raises(FetchError) as info:
                await downloader.fetch(server.url("drip/200000/bus.jpg"))
            return info.value, downloader.bytes_downloaded

    err, counted = asyncio.run(go())
    assert err.error_class == "too_large"
    assert 30_000 < counted < BUS.stat().st_size


def test_redirects_followed_up_to_cap(server: MediaServer) -> None:
    result = fetch(server.url("hops/5/bus.jpg"), settings(max_redirects=5))
    assert result.data == BUS.read_bytes()
    assert result.final_url == server.url("hops/0/bus.jpg")


def test_redirect_cap(server: MediaServer) -> None:
    err = fetch_error(server.url("hops/6/bus.jpg"), settings(max_redirects=5))
    assert err.error_class == "too_many_redirects"
    assert server.hits("hops/0/bus.jpg") == 0


def test_redirect_to_canary_refused(server: MediaServer, canary: Canary) -> None:
    path = "redirect?to=" + quote(canary.url("latest/meta-data/"), safe="")
    err = fetch_error(server.url(path))
    assert err.error_class == "ssrf_refused"
    assert "loopback" in err.reason
    assert server.hits("redirect") == 1
    assert canary.hits == 0


def test_direct_canary_refused(canary: Canary) -> None:
    err = fetch_error(canary.url("x.jpg"))
    assert err.error_class == "ssrf_refused"
    assert canary.hits == 0


def test_canary_is_reachable_when_allowed(canary: Canary) -> None:
    # Proves the canary would count a hit, so the hits == 0 assertions above mean something.
    result = fetch(canary.url("x.jpg"), settings(allow_cidrs=("127.0.0.2/32",)))
    assert result.data == b"canary\n"
    assert canary.hits == 1


def test_hostname_resolving_to_loopback_refused(server: MediaServer) -> None:
    err = fetch_error(f"http://localhost:{server.port}/bus.jpg", settings(allow_cidrs=()))
    assert err.error_class == "ssrf_refused"
    assert server.hits("bus.jpg") == 0


def test_hostname_allowed_by_cidr(server: MediaServer) -> None:
    result = fetch(f"http://localhost:{server.port}/bus.jpg")
    assert result.data == BUS.read_bytes()


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/bus.jpg", "gopher://127.0.0.1:70/_x"])
def test_bad_scheme(url: str) -> None:
    assert fetch_error(url).error_class == "bad_scheme"


def test_redirect_to_bad_scheme(server: MediaServer) -> None:
    err = fetch_error(server.url("redirect?to=" + quote("file:///etc/passwd", safe="")))
    assert err.error_class == "bad_scheme"


def test_empty_body(server: MediaServer) -> None:
    assert fetch_error(server.url("empty/bus.jpg")).error_class == "empty_body"


def test_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the fetch: nothing listens
    err = fetch_error(f"http://127.0.0.1:{port}/x.jpg", settings(retries=1))
    assert err.error_class == "connection_failed"
    assert "2 attempts" in err.reason


def test_reasons_carry_no_secrets(server: MediaServer) -> None:
    url = server.url("status/404/x.jpg?token=s3cr3t").replace("http://", "http://user:hunter2@")
    err = fetch_error(url)
    assert err.error_class == "http_404"
    assert "hunter2" not in err.reason and "s3cr3t" not in err.reason


def test_per_host_concurrency_bound(server: MediaServer) -> None:
    s = settings(per_host_concurrency=2, concurrency=8)

    async def go() -> list[Download]:
        async with Downloader(s) as downloader:
            return list(await asyncio.gather(*(downloader.fetch(server.url("slow/0.2/bus.jpg")) for _ in range(6))))

    results = asyncio.run(go())
    assert len(results) == 6
    assert 1 <= server.max_concurrent <= 2


def test_global_concurrency_bound(server: MediaServer) -> None:
    s = settings(per_host_concurrency=8, concurrency=3)

    async def go() -> list[Download]:
        async with Downloader(s) as downloader:
            return list(await asyncio.gather(*(downloader.fetch(server.url("slow/0.2/bus.jpg")) for _ in range(7))))

    assert len(asyncio.run(go())) == 7
    assert 1 <= server.max_concurrent <= 3


def test_redact_url() -> None:
    assert redact_url("https://u:p@example.com:8443/a/b.jpg?sig=abc#x") == "https://example.com:8443/a/b.jpg?<redacted>"
    assert redact_url("http://example.com/a.jpg") == "http://example.com/a.jpg"


def test_backoff_full_jitter_is_bounded() -> None:
    rng = random.Random(7)
    delays = [backoff_s(attempt, 0.25, 5.0, rng) for attempt in range(1, 12) for _ in range(20)]
    assert all(0.0 <= d <= 5.0 for d in delays)
    first = [backoff_s(1, 0.25, 5.0, rng) for _ in range(50)]
    assert max(first) <= 0.25
    assert len(set(first)) > 1  # jittered, not a fixed sleep

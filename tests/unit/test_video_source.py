"""Where video bytes come from: HTTP range reads through the guarded downloader, allowed local files.

Also the media server's Range support and the pure helpers of `mediavec publish video`.
Everything runs against a real loopback HTTP server.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from aiohttp import web

from devstack.mediaserver import MediaServer, byte_range
from devstack.samples import find_sample_photos
from media.download import Downloader, FetchError, RangePart
from media.settings import FetchSettings
from media.video_source import HttpRangeFile, file_url_path, open_local, read_local
from mediavec.publish import media_id_for
from mediavec.publish_video import Probed, expand_sources, local_dirs, parse_duration, segment_requests, uncovered

BUS = {path.name: path for path in find_sample_photos()[0]}["bus.jpg"]
T = TypeVar("T")
BLOCK = 4096


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[MediaServer]:
    shutil.copy(BUS, tmp_path / "bus.jpg")
    with MediaServer(tmp_path) as srv:
        yield srv


def fetch_settings(**overrides: object) -> FetchSettings:
    base: dict[str, object] = {"allow_cidrs": ("127.0.0.1/32",), "retries": 0}
    return FetchSettings.model_validate(base | overrides)


def in_thread(url: str, work: Callable[[HttpRangeFile], T], **file_args: object) -> T:
    """Run ``work`` on an HttpRangeFile in a worker thread while the downloader's loop serves it."""

    async def main() -> T:
        loop = asyncio.get_running_loop()
        async with Downloader(fetch_settings()) as downloader:
            args: dict[str, object] = {"block_bytes": BLOCK} | file_args
            reader = HttpRangeFile(downloader, url, loop, **args)  # type: ignore[arg-type]
            return await loop.run_in_executor(None, work, reader)

    return asyncio.run(main())


def test_random_reads_return_the_file_bytes_and_each_block_is_fetched_once(server: MediaServer) -> None:
    data = BUS.read_bytes()
    rng = random.Random(7)
    spots = [(rng.randrange(len(data)), rng.randrange(1, 3 * BLOCK)) for _ in range(200)]

    def work(f: HttpRangeFile) -> tuple[list[bytes], int, int, int]:
        f.open()
        got = []
        for offset, size in spots:
            f.seek(offset)
            got.append(f.read(size))
        f.seek(-10, os.SEEK_END)
        got.append(f.read())
        return got, f.requests, f.bytes_read, f.size

    got, requests, read, size = in_thread(server.url("bus.jpg"), work, cache_bytes=len(data) + BLOCK)
    assert got[:-1] == [data[o : o + n] for o, n in spots]
    assert got[-1] == data[-10:]
    blocks = -(-len(data) // BLOCK)
    assert size == len(data)
    assert requests == blocks and read == len(data), "a cache big enough for the file fetches every block once"
    ranges = [s.range for s in server.served]
    assert len(ranges) == blocks and len(set(ranges)) == blocks and all(s.status == 206 for s in server.served)


def test_a_small_cache_refetches_evicted_blocks_only(server: MediaServer) -> None:
    def work(f: HttpRangeFile) -> list[int]:
        f.open()
        counts = []
        for offset in (0, BLOCK, 2 * BLOCK, 0, 3 * BLOCK, 2 * BLOCK):
            f.seek(offset)
            f.read(10)
            counts.append(f.requests)
        return counts

    # two blocks kept: 0, 1 | 1, 2 | 2, 0 (0 again) | 0, 3 | 3, 2 (2 was evicted)
    assert in_thread(server.url("bus.jpg"), work, cache_bytes=2 * BLOCK) == [1, 2, 3, 4, 5, 6]


def test_a_server_that_ignores_range_is_read_whole_once(server: MediaServer) -> None:
    def work(f: HttpRangeFile) -> tuple[bytes, bool, int]:
        f.open()
        f.seek(5000)
        return f.read(100), f.ranged, f.requests

    piece, ranged, requests = in_thread(server.url("norange/bus.jpg"), work)
    assert piece == BUS.read_bytes()[5000:5100]
    assert (ranged, requests) == (False, 1)
    assert [(s.range, s.status, s.bytes) for s in server.served] == [(f"bytes=0-{BLOCK - 1}", 200, BUS.stat().st_size)]


def test_a_byte_budget_stops_reading_with_too_large(server: MediaServer) -> None:
    def work(f: HttpRangeFile) -> tuple[int, str | None]:
        f.open()
        data = f.read()
        return len(data), f.error.error_class if f.error else None

    got, error = in_thread(server.url("bus.jpg"), work, max_total_bytes=3 * BLOCK)
    assert (got, error) == (3 * BLOCK, "too_large")
    assert len(server.served) == 3


def test_a_failing_first_request_raises_and_a_failing_later_one_ends_the_data(server: MediaServer) -> None:
    def refused(f: HttpRangeFile) -> str:
        with pytest.raises(FetchError) as info:
            f.open()
        return info.value.error_class

    assert in_thread(server.url("missing.avi"), refused) == "http_404"

    def vanishing(f: HttpRangeFile) -> tuple[bytes, str | None]:
        f.open()
        (server.root / "bus.jpg").unlink()  # the next block is a 404
        f.seek(BLOCK)
        return f.read(10), f.error.error_class if f.error else None

    assert in_thread(server.url("bus.jpg"), vanishing) == (b"", "http_404")


def test_reading_on_the_event_loop_thread_is_refused(server: MediaServer) -> None:
    async def main() -> None:
        async with Downloader(fetch_settings()) as downloader:
            f = HttpRangeFile(downloader, server.url("bus.jpg"), asyncio.get_running_loop(), block_bytes=BLOCK)
            with pytest.raises(RuntimeError, match="wait for itself"):
                f.open()

    asyncio.run(main())
    assert server.served == []


def test_fetch_range_returns_206_parts_and_refuses_unsatisfiable_ranges(server: MediaServer) -> None:
    data = BUS.read_bytes()

    async def main() -> tuple[RangePart, RangePart, FetchError]:
        async with Downloader(fetch_settings()) as d:
            part = await d.fetch_range(server.url("bus.jpg"), 100, 200)
            tail = await d.fetch_range(server.url("bus.jpg"), len(data) - 5, len(data) + 100)
            with pytest.raises(FetchError) as info:
                await d.fetch_range(server.url("bus.jpg"), len(data), len(data) + 10)
            return part, tail, info.value

    part, tail, error = asyncio.run(main())
    assert (part.data, part.start, part.total, part.whole) == (data[100:200], 100, len(data), False)
    assert (tail.data, tail.total) == (data[-5:], len(data))
    assert error.error_class == "http_416"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", (0, 10)),
        ("bytes=90-", (90, 100)),
        ("bytes=-5", (95, 100)),
        ("bytes=50-500", (50, 100)),
        ("bytes=9-2", None),  # invalid: ignored
        ("bytes=0-1,5-6", None),  # several ranges: ignored
        ("items=0-9", None),
        (None, None),
    ],
)
def test_byte_range_parsing(header: str | None, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=-0", "bytes=200-300"])
def test_byte_range_past_the_end_is_416(header: str) -> None:
    with pytest.raises(web.HTTPRequestRangeNotSatisfiable):
        byte_range(header, 100)


# -- local files -------------------------------------------------------------------------------


@pytest.fixture()
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "a.bin").write_bytes(b"inside")
    (outside / "b.bin").write_bytes(b"secret")
    return allowed, outside


def local_error(url: str, allow: tuple[str, ...]) -> str:
    with pytest.raises(FetchError) as info:
        open_local(url, allow)
    return info.value.error_class


def test_a_file_under_allow_paths_is_read(dirs: tuple[Path, Path]) -> None:
    allowed, _ = dirs
    assert read_local((allowed / "a.bin").as_uri(), (str(allowed),), 100) == b"inside"
    assert local_error((allowed / "a.bin").as_uri(), ()) == "bad_scheme"  # no directory allowed at all
    with pytest.raises(FetchError) as info:
        read_local((allowed / "a.bin").as_uri(), (str(allowed),), 3)
    assert info.value.error_class == "too_large"


def test_escapes_from_allow_paths_are_refused(dirs: tuple[Path, Path]) -> None:
    allowed, outside = dirs
    allow = (str(allowed),)
    (allowed / "link.bin").symlink_to(outside / "b.bin")
    (allowed / "linkdir").symlink_to(outside, target_is_directory=True)
    os.mkfifo(allowed / "pipe")
    (allowed / "sub").mkdir()
    assert local_error((outside / "b.bin").as_uri(), allow) == "path_not_allowed"
    assert local_error(f"file://{allowed}/../outside/b.bin", allow) == "path_not_allowed"
    assert local_error((allowed / "link.bin").as_uri(), allow) == "path_not_allowed"
    assert local_error((allowed / "linkdir" / "b.bin").as_uri(), allow) == "path_not_allowed"
    assert local_error((allowed / "pipe").as_uri(), allow) == "path_not_allowed"  # not a regular file, no hang
    assert local_error((allowed / "sub").as_uri(), allow) == "path_not_allowed"
    assert local_error((allowed / "nothere.bin").as_uri(), allow) == "not_found"
    assert local_error(f"file://otherhost{allowed}/a.bin", allow) == "path_not_allowed"
    assert local_error(f"file://{allowed}-evil/a.bin", allow) == "path_not_allowed"  # a prefix is not a parent


# -- publish video helpers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("10s", 10.0), ("1.5s", 1.5), ("2m", 120.0), ("500ms", 0.5), ("1h", 3600.0), ("7", 7.0)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "-1s", "10 sec", "1.5.2s"])
def test_parse_duration_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_sources_expand_from_files_directories_and_list_files(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("b.mp4", "a.AVI", "notes.txt"):
        (videos / name).write_bytes(b"x")
    (tmp_path / "c.mkv").write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("# mine\nc.mkv\n\nhttp://127.0.0.1:1/d.mp4\nvideos\n")
    urls = expand_sources([str(listing), str(videos / "b.mp4"), "https://127.0.0.1:1/e.webm"], base=tmp_path)
    assert urls == [
        (tmp_path / "c.mkv").as_uri(),
        "http://127.0.0.1:1/d.mp4",
        (videos / "a.AVI").as_uri(),
        (videos / "b.mp4").as_uri(),
        "https://127.0.0.1:1/e.webm",
    ]
    assert file_url_path((videos / "a.AVI").as_uri()) == videos / "a.AVI"
    assert local_dirs(urls) == sorted([str(tmp_path), str(videos)])
    assert uncovered(local_dirs(urls), (str(tmp_path),)) == []
    assert uncovered(local_dirs(urls), (str(videos),)) == [str(tmp_path)]
    with pytest.raises(FileNotFoundError):
        expand_sources([str(tmp_path / "missing.txt")])


def test_segment_requests_tile_the_video_with_one_media_id() -> None:
    probed = Probed("http://127.0.0.1:1/v.avi", 79.5)
    reqs = segment_requests(probed, segment_s=10, collection="c", run_id="r", sample_fps=0.5)
    assert [(r.start_s, r.end_s) for r in reqs] == [(k * 10.0, min(79.5, k * 10.0 + 10)) for k in range(8)]
    assert {(r.media_id, r.kind, r.url, r.collection, r.run_id, r.sample_fps) for r in reqs} == {
        (media_id_for(probed.url), "video", probed.url, "c", "r", 0.5)
    }
    window = segment_requests(probed, segment_s=4, collection="c", run_id="r", start_s=30, end_s=41)
    assert [(r.start_s, r.end_s) for r in window] == [(30.0, 34.0), (34.0, 38.0), (38.0, 41.0)]
    assert window[0].sample_fps is None  # the workers' default rate
    assert segment_requests(Probed("x", None, "not_a_video: ..."), segment_s=10, collection="c", run_id="r") == []

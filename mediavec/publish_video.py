"""Publish videos as segment requests: probe each video's duration, tile it, one request per segment.

Sources are http(s) URLs, local video files, directories (every video file in them, by
extension) and list files (one source per line, ``#`` comments; relative paths are relative to
the list file). Local files are published as ``file://`` URLs of their absolute paths: the fetch
workers read them only under ``fetch.allow_paths`` (``MEDIAVEC_FETCH__ALLOW_PATHS``).

Durations come from the container's headers (PyAV): a local file is opened directly, an http(s)
URL through :class:`~consumers.fetch.video_source.HttpRangeFile`, so the same SSRF guard, caps and
range reads as the fetch stage apply (``fetch.allow_cidrs`` / ``allow_hosts`` of this process).
All segments of one video share its media id (:func:`mediavec.publish.media_id_for` of the URL);
frame indices stay unique because samples lie on one grid per video.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tqdm import tqdm

from consumers.fetch.decode import DecodeError
from consumers.fetch.download import Downloader, FetchError
from consumers.fetch.video import video_duration
from consumers.fetch.video_sampling import segments
from consumers.fetch.video_source import HttpRangeFile, file_url_path, is_file_url
from mediavec.publish import media_id_for
from schemas import MediaRequest
from streams.settings import Settings

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".flv", ".ogv", ".wmv", ".3gp"}
)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|min|m|h)?\s*$", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds in ``"10s"``, ``"1.5s"``, ``"2m"``, ``"500ms"``, ``"1h"`` or a bare number of seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (try 10s, 1.5s, 2m, 500ms)")
    return float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def expand_sources(sources: Iterable[str], base: Path | None = None) -> list[str]:
    """Video URLs (http(s), or file:// of absolute paths) named by ``sources``, in order, once each."""
    out: list[str] = []
    for source in sources:
        for url in _expand(source.strip(), base or Path.cwd()):
            if url not in out:
                out.append(url)
    return out


def _expand(source: str, base: Path) -> Iterator[str]:
    if not source or source.startswith("#"):
        return
    scheme = urlsplit(source).scheme.lower()
    if scheme in ("http", "https"):
        yield source
        return
    path = file_url_path(source) if scheme == "file" else (base / source)
    if path.is_dir():
        yield from (p.resolve().as_uri() for p in sorted(path.iterdir()) if p.is_file() and is_video_file(p))
    elif is_video_file(path):
        yield path.resolve().as_uri()  # a missing file fails at probing, with its name
    elif path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        yield from (url for line in lines for url in _expand(line.strip(), path.parent))
    else:
        raise FileNotFoundError(f"no such video, directory or list file: {source}")


@dataclass(frozen=True)
class Probed:
    url: str
    duration_s: float | None  # None when the video could not be read
    error: str = ""


def probe_videos(settings: Settings, urls: Sequence[str], *, show_progress: bool = True) -> list[Probed]:
    """Each video's declared duration; a video that cannot be read says why instead."""
    bar = tqdm(total=len(urls), unit="video", desc="probed", disable=not show_progress)
    try:
        remote = [u for u in urls if not is_file_url(u)]
        found = _probe_remote(settings, remote, bar) if remote else {}
        for url in urls:
            if is_file_url(url):
                found[url] = _duration(file_url_path(url))
                bar.update(1)
    finally:
        bar.close()
    return [_probed(u, found[u]) for u in urls]


def _probed(url: str, found: float | str) -> Probed:
    return Probed(url, None, found) if isinstance(found, str) else Probed(url, found)


def _probe_remote(settings: Settings, urls: Sequence[str], bar: tqdm) -> dict[str, float | str]:
    f = settings.fetch

    async def main() -> dict[str, float | str]:
        found: dict[str, float | str] = {}
        loop = asyncio.get_running_loop()
        async with Downloader(f) as downloader:
            for url in urls:
                reader = HttpRangeFile(
                    downloader, url, loop, block_bytes=f.range_block_bytes, max_total_bytes=f.max_bytes
                )
                found[url] = await loop.run_in_executor(None, _remote_duration, reader)
                bar.update(1)
        return found

    return asyncio.run(main())


def _remote_duration(reader: HttpRangeFile) -> float | str:
    """In a worker thread: the reader waits on the event loop for each range."""
    with closing(reader):
        try:
            reader.open()
        except FetchError as exc:
            return f"{exc.error_class}: {exc.reason}"
        duration = _duration(reader)
    if reader.error is not None:
        return f"{reader.error.error_class}: {reader.error.reason}"
    return duration


def _duration(source: Path | HttpRangeFile) -> float | str:
    """Seconds, or why there are none."""
    try:
        seconds = video_duration(source)
    except DecodeError as exc:
        return f"{exc.error_class}: {exc.reason}"
    return seconds if seconds > 0 else "unknown_duration: the video declares no duration"


def segment_requests(
    probed: Probed,
    *,
    segment_s: float,
    collection: str,
    run_id: str,
    sample_fps: float | None = None,
    start_s: float = 0.0,
    end_s: float | None = None,
) -> list[MediaRequest]:
    """One request per segment of ``[start_s, min(end_s, duration))``, all with the video's media id."""
    if probed.duration_s is None:
        return []
    stop = probed.duration_s if end_s is None else min(end_s, probed.duration_s)
    media_id = media_id_for(probed.url)
    now = time.time()
    return [
        MediaRequest(
            media_id=media_id,
            url=probed.url,
            kind="video",
            collection=collection,
            start_s=start_s + a,
            end_s=start_s + b,
            sample_fps=sample_fps,
            run_id=run_id,
            published_at=now,
        )
        for a, b in segments(stop - start_s, segment_s)
    ]


def local_dirs(urls: Iterable[str]) -> list[str]:
    """Directories of the local videos among ``urls``: what the fetch workers' allow_paths must cover."""
    return sorted({str(file_url_path(u).parent) for u in urls if is_file_url(u)})


def uncovered(dirs: Iterable[str], allow_paths: Sequence[str]) -> list[str]:
    """The directories ``allow_paths`` does not cover (as the fetch stage will judge them)."""
    roots = [Path(p).resolve() for p in allow_paths]
    return [d for d in dirs if not any(Path(d).resolve().is_relative_to(r) for r in roots)]

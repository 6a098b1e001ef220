"""Publish videos as segment requests: probe each video's duration, tile it, one request per segment.

Sources are http(s) URLs, local video files, directories (every video file in them, by
extension) and list files (one source per line, ``#`` comments; relative paths are relative to
the list file). Local files are published as ``file://`` URLs of their absolute paths: the fetch
workers read them only under ``fetch.allow_paths`` (``MEDIAVEC_FETCH__ALLOW_PATHS``).

Durations come from the container's headers (PyAV): a local file is opened directly, an http(s)
URL through :class:`~media.video_source.HttpRangeFile`, so the same SSRF guard, caps and
range reads as the fetch stage apply (``fetch.allow_cidrs`` / ``allow_hosts`` of this process).
All segments of one video share its media id (:func:`mediavec.publish.media_id_for` of the URL);
frame indices stay unique because samples lie on one grid per video.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tqdm import tqdm

from media.decode import DecodeError
from media.download import Downloader, FetchError
from media.video import video_duration
from media.video_sampling import segments
from media.video_source import HttpRangeFile, file_url_path, is_file_url
from mediavec.publish import media_id_for
from mediavec.publish_file import (
    Line,
    PublishFileError,
    Refused,
    display_name,
    quote,
    read_lines,
    reason_text,
    request_problem,
    url_problem,
)
from mediavec.settings import Settings
from schemas import MediaRequest

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


@dataclass(frozen=True)
class Problem:
    """A source, or a video, that yields no requests, and why."""

    source: str  # as the user named it (an argument, ``list.txt:3``) or the video's URL
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


@dataclass
class Sources:
    """Video URLs named by the sources, in order and once each, and the sources that name none."""

    urls: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set, repr=False)
    _lists: set[Path] = field(default_factory=set, repr=False)

    def refuse(self, source: str, reason: str) -> None:
        self.problems.append(Problem(source, reason_text(reason)))

    def add(self, url: str) -> None:
        if url not in self._seen:
            self._seen.add(url)
            self.urls.append(url)


def gather_sources(sources: Iterable[str], base: Path | None = None) -> Sources:
    """Video URLs (http(s), or file:// of absolute paths) named by ``sources``; each bad source once."""
    found = Sources()
    for source in sources:
        _gather(source.strip(), display_name(source), base or Path.cwd(), found)
    return found


def expand_sources(sources: Iterable[str], base: Path | None = None) -> list[str]:
    """The video URLs of :func:`gather_sources`; FileNotFoundError names the first bad source."""
    found = gather_sources(sources, base)
    if found.problems:
        raise FileNotFoundError(str(found.problems[0]))
    return found.urls


def _gather(source: str, label: str, base: Path, found: Sources) -> None:
    if not source or source.startswith("#"):
        return
    try:
        scheme = urlsplit(source).scheme.lower()
        if scheme in ("http", "https"):
            problem = url_problem(source)
            if problem:
                found.refuse(label, problem)
            else:
                found.add(source)
            return
        if scheme != "file" and "://" in source:
            found.refuse(label, f"not an http(s) or file:// URL: {quote(source)}")
            return
        path = file_url_path(source) if scheme == "file" else (base / source)
        _gather_path(path, label, found)
    except (ValueError, FetchError, OSError) as exc:
        found.refuse(label, _why(exc))


def _gather_path(path: Path, label: str, found: Sources) -> None:
    if path.is_dir():
        videos = [p for p in sorted(path.iterdir()) if p.is_file() and is_video_file(p)]
        if not videos:
            found.refuse(label, f"no video files in this directory ({', '.join(sorted(VIDEO_EXTENSIONS))})")
        for video in videos:
            found.add(video.resolve().as_uri())
    elif is_video_file(path):
        found.add(path.resolve().as_uri())  # a missing file fails at probing, with its name
    elif path.is_file():
        _gather_list(path, label, found)
    else:
        found.refuse(label, "no such video, directory or list file")


def _gather_list(path: Path, label: str, found: Sources) -> None:
    """A list file: one source per line, ``#`` comments, paths relative to the list file."""
    if path.resolve() in found._lists:
        found.refuse(label, "this list file was read already (a list naming itself?)")
        return
    found._lists.add(path.resolve())
    try:
        lines, refused = read_lines(path, "list file")
    except PublishFileError as exc:
        found.problems.append(Problem(label, str(exc).removeprefix(f"{display_name(path)}: ")))
        return
    entries: list[Line | Refused] = [*lines, *refused]
    for entry in sorted(entries, key=lambda e: e.number if isinstance(e, Line) else e.line):
        if isinstance(entry, Refused):
            found.refuse(f"{label}:{entry.line}", entry.reason)
        else:
            _gather(entry.text, f"{label}:{entry.number}", path.parent, found)


def _why(exc: Exception) -> str:
    if isinstance(exc, FetchError):
        return exc.reason
    if isinstance(exc, OSError):
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    return f"not a URL or path ({exc})"


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
    except OSError as exc:  # a local file we may not read
        return f"unreadable: {exc.strerror or type(exc).__name__}"
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


def video_requests(probed: Sequence[Probed], **segmenting: Any) -> tuple[list[MediaRequest], list[Problem]]:
    """The segment requests of every readable video (``segmenting``: :func:`segment_requests`'
    keywords), and each video that yields none or whose requests the consumers would refuse, once."""
    requests: list[MediaRequest] = []
    problems: list[Problem] = []
    for p in probed:
        source = display_name(file_url_path(p.url) if is_file_url(p.url) else p.url)
        if p.duration_s is None:
            problems.append(Problem(source, reason_text(p.error)))
            continue
        segs = segment_requests(p, **segmenting)
        refused = next((why for why in map(request_problem, segs) if why), None)
        if not segs:
            problems.append(Problem(source, f"no segment to publish (the video lasts {p.duration_s:.1f} s)"))
        elif refused:
            problems.append(Problem(source, refused))
        else:
            requests.extend(segs)
    return requests, problems


def local_dirs(urls: Iterable[str]) -> list[str]:
    """Directories of the local videos among ``urls``: what the fetch workers' allow_paths must cover."""
    return sorted({str(file_url_path(u).parent) for u in urls if is_file_url(u)})


def uncovered(dirs: Iterable[str], allow_paths: Sequence[str]) -> list[str]:
    """The directories ``allow_paths`` does not cover (as the fetch stage will judge them)."""
    roots = [Path(p).resolve() for p in allow_paths]
    return [d for d in dirs if not any(Path(d).resolve().is_relative_to(r) for r in roots)]

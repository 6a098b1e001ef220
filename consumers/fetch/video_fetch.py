"""The fetch stage's video path: one media request (a segment) in, all of its sampled frames out.

Request semantics: ``url`` is http(s) (read with byte ranges, :mod:`media.video_source`)
or ``file://`` of a path under ``fetch.allow_paths``; ``start_s`` defaults to 0, ``end_s`` to the
end the headers declare, ``sample_fps`` to ``fetch.default_sample_fps``; ``fetch.max_video_frames``
bounds a segment and ``fetch.video_decode_mode`` picks the decode plan.

Sampling and the frames' encoding run in the stage's thread pool, never on its event loop. A
segment that breaks after some frames (a cut file, a download failing half way) keeps them: they
are published, and the stage adds a dead letter saying how many were published out of how many
(:class:`VideoFetched` with a ``failure``). A segment with no frame and an error is a plain
:class:`~streams.stage.Failure`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from media.decode import DecodeError
from media.download import Downloader, FetchError, public_url, redact_url
from media.settings import FetchSettings
from media.video import SampledFrame, SegmentResult, Source, sample_segment, video_duration
from media.video_sampling import count_targets
from media.video_source import HttpRangeFile, is_file_url, open_local
from media.video_torchcodec import sample_segment_torchcodec
from schemas.codec import encode_frame
from schemas.models import Frame, MediaRequest
from streams.stage import Failure, OutputRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoFetched:
    """A sampled segment: its frames as ready ``frames`` records, plus the fault that cut it short."""

    req: MediaRequest
    frames: list[OutputRecord] = field(default_factory=list)
    failure: Failure | None = None


@dataclass(frozen=True)
class _Sampled:
    result: SegmentResult
    expected: int  # frames the segment should give (clipped to the declared duration)
    records: list[OutputRecord]


class VideoFetcher:
    """Turns video requests into frames; built by the stage with its downloader and thread pool."""

    def __init__(self, settings: FetchSettings, downloader: Downloader, executor: concurrent.futures.Executor) -> None:
        self.settings = settings
        self._downloader = downloader
        self._executor = executor

    async def fetch(self, req: MediaRequest) -> Failure | VideoFetched:
        """Sample ``req``'s segment; never raises for bad media or a refused download."""
        try:
            if is_file_url(req.url):
                sampled, fault = await self._run(self._sample_local, req), None
            else:
                sampled, fault = await self._sample_http(req)
        except FetchError as exc:
            return Failure(exc.error_class, exc.reason, media_id=req.media_id, details={"url": redact_url(req.url)})
        return _outcome(req, sampled, fault)

    async def _sample_http(self, req: MediaRequest) -> tuple[_Sampled, FetchError | None]:
        reader = HttpRangeFile(
            self._downloader,
            req.url,
            asyncio.get_running_loop(),
            block_bytes=self.settings.range_block_bytes,
            max_total_bytes=self.settings.max_bytes,
        )
        with closing(reader):
            sampled = await self._run(self._sample_remote, reader, req)
        logger.debug(
            "%s: %d requests, %d of %d bytes read%s",
            req.media_id,
            reader.requests,
            reader.bytes_read,
            reader.size,
            "" if reader.ranged else " (Range ignored: whole body)",
        )
        return sampled, reader.error

    async def _run(self, fn: Callable[..., _Sampled], *args: Any) -> _Sampled:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _sample_remote(self, reader: HttpRangeFile, req: MediaRequest) -> _Sampled:
        return self._sample(reader.open(), req)

    def _sample_local(self, req: MediaRequest) -> _Sampled:
        fh: BinaryIO = open_local(req.url, self.settings.allow_paths)
        with fh:
            return self._sample(fh, req)

    def _sample(self, source: Source, req: MediaRequest) -> _Sampled:
        """Runs in a worker thread: the segment's frames, encoded as ``frames`` records."""
        s = self.settings
        start = req.start_s or 0.0
        fps = req.sample_fps or s.default_sample_fps
        try:
            duration = video_duration(source)
        except DecodeError as exc:
            return _Sampled(SegmentResult([], exc), 0, [])
        end = req.end_s if req.end_s is not None else duration
        if end <= 0:
            error = DecodeError("unknown_duration", "the video declares no duration; give end_s")
            return _Sampled(SegmentResult([], error), 0, [])
        sample: Callable[..., SegmentResult] = (
            functools.partial(sample_segment_torchcodec, device=s.video_decode_device)
            if s.video_decoder == "torchcodec"
            else functools.partial(sample_segment, mode=s.video_decode_mode)
        )
        result = sample(
            source, start, end, fps, s.max_side, s.jpeg_quality, s.max_video_frames, max_pixels=s.max_pixels
        )
        expected = count_targets(start, min(end, duration) if duration > 0 else end, fps)
        return _Sampled(result, expected, frame_records(req, result.frames))


def frame_records(req: MediaRequest, frames: Sequence[SampledFrame]) -> list[OutputRecord]:
    """One ``frames`` record per sampled frame, keyed by media id (segments of a video share it)."""
    options_json = json.dumps(req.options, sort_keys=True, separators=(",", ":"))
    source_url = public_url(req.url)
    key = req.media_id.encode()
    out = []
    for f in frames:
        frame = Frame(
            media_id=req.media_id,
            frame_index=f.index,
            timestamp_s=f.timestamp_s,
            source_url=source_url,
            collection=req.collection,
            width=f.width,
            height=f.height,
            jpeg=f.jpeg,
            content_sha256=hashlib.sha256(f.jpeg).hexdigest(),
            options_json=options_json,
            metadata=dict(req.metadata),
            run_id=req.run_id,
            published_at=req.published_at,
            frames_in_media=len(frames),
        )
        out.append(OutputRecord(topic="frames", key=key, value=encode_frame(frame)))
    return out


def _outcome(req: MediaRequest, sampled: _Sampled, fault: FetchError | None) -> Failure | VideoFetched:
    """A failed download outranks what the decoder made of the bytes it stopped getting."""
    error: FetchError | DecodeError | None = fault or sampled.result.error
    if error is None:
        return VideoFetched(req, sampled.records)
    details = {"url": redact_url(req.url)}
    frames = sampled.result.frames
    if not frames:
        return Failure(error.error_class, error.reason, media_id=req.media_id, details=details)
    until = frames[-1].timestamp_s
    details |= {
        "frames_published": str(len(frames)),
        "frames_expected": str(sampled.expected),
        "decoded_until_s": f"{until:.3f}",
    }
    # details carry the accounting for programs; the reason repeats it for people reading `mediavec dlq list`.
    reason = f"{error.reason}; {len(frames)} of {sampled.expected} frames published, decoded until {until:.3f} s"
    failure = Failure(error.error_class, reason, media_id=req.media_id, details=details)
    return VideoFetched(req, sampled.records, failure)

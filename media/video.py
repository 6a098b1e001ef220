"""Video segments to sampled JPEG frames, with PyAV (FFmpeg).

``sample_segment`` samples ``[start_s, end_s)`` at ``sample_fps``: for each grid time
(:mod:`media.video_sampling`) it takes the first decoded frame whose presentation time
is at or after it, and reports that frame's real time. Two decode plans give the same frames:

- ``seek``: for each target, seek to the keyframe before it and decode up to it. Wins when
  keyframes are dense compared with the sampling interval (most of the video is skipped).
- ``sequential``: seek once to the keyframe before the first target and decode every frame of
  the segment. Wins when keyframes are sparse (each seek would decode a long run again).

``auto`` scans the segment's packets (demuxing only, no decoding) and picks the plan that
decodes fewer frames. A broken file is not all-or-nothing: the frames decoded before the fault
come back with a :class:`DecodeError` (``truncated_video``, ``corrupt_video``,
``not_a_video``...) so the caller can publish and account for them.

A source is bytes, a path, or a seekable binary file object (``read``/``seek``/``tell``), such as
:class:`media.video_source.HttpRangeFile`; opening one and naming FFmpeg's failures is
:mod:`media.video_container`.

CPU-bound; FFmpeg releases the GIL while decoding, so the fetch stage can run this in a thread.
"""

from __future__ import annotations

import io
import itertools
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import av
import av.error
import av.video.frame
from PIL import Image

from media.decode import MAX_JPEG_BYTES, DecodeError
from media.video_container import Source, classify, open_container, video_stream
from media.video_sampling import Mode, Target, choose_mode, count_targets, keyframe_interval, targets

logger = logging.getLogger(__name__)


ModeChoice = Literal["auto", "seek", "sequential"]
_EPS = 1e-6
_PROBE_SCAN_S = 120.0


@dataclass(frozen=True)
class VideoInfo:
    duration_s: float
    fps: float
    width: int
    height: int
    codec: str
    keyframe_interval_s: float  # estimated from the packets of the first minutes


@dataclass(frozen=True)
class SampledFrame:
    index: int  # sample number within the media (grid index k of time k / sample_fps)
    timestamp_s: float  # the decoded frame's real presentation time
    jpeg: bytes
    width: int
    height: int


@dataclass(frozen=True)
class SegmentResult:
    frames: list[SampledFrame]
    error: DecodeError | None = None
    mode: Mode = "sequential"
    decoded_frames: int = 0  # frames the decoder produced (the plan's cost)
    info: VideoInfo | None = field(default=None, compare=False)


@dataclass(frozen=True)
class _Clock:
    time_base: float
    start_pts: int

    def seconds(self, pts: int) -> float:
        return (pts - self.start_pts) * self.time_base

    def pts(self, seconds: float) -> int:
        return self.start_pts + int(seconds / self.time_base)


class _Video:
    """An open container, its first video stream and its clock; closed by ``close``."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.decoded = 0  # frames the decoder produced: the cost of a plan
        self._load()

    def _load(self) -> None:
        self.container = open_container(self.source)
        try:
            self.stream = video_stream(self.container)
        except DecodeError:
            self.container.close()
            raise
        self.stream.thread_type = "AUTO"
        tb = self.stream.time_base
        self.clock = _Clock(float(tb) if tb else 1 / 90000, self.stream.start_time or 0)

    def start_at(self, time_s: float) -> Iterator[tuple[float, av.video.frame.VideoFrame]]:
        """Frames from a true keyframe at or before ``time_s`` onwards.

        A seek is checked, not trusted: it must land on a decoded keyframe no later than the
        target. Otherwise (an AVI cut before its index flags every packet as key and seeks
        nowhere useful; decoding from a P-frame gives plausible but wrong pixels) it backs off
        1, 2, 4... seconds, and at last reopens the media and decodes from its start.
        """
        back = 0.0
        while time_s - back > 0:
            self.seek(time_s - back)
            frames = self.frames()
            first = next(frames, None)
            if first is not None and first[1].key_frame and first[0] <= time_s + _EPS:
                return itertools.chain([first], frames)
            back = max(1.0, back * 2)
        self.container.close()
        self._load()
        return self.frames()

    def info(self, keyframe_interval_s: float) -> VideoInfo:
        ctx = self.stream.codec_context
        codec = ctx.codec.canonical_name  # 'av1', not the decoder's name 'libdav1d'
        return VideoInfo(self.duration_s(), self.fps(), ctx.width, ctx.height, codec, keyframe_interval_s)

    def duration_s(self) -> float:
        """What the headers declare: a cut AVI keeps its frame count while FFmpeg's duration shrinks."""
        if self.stream.duration:
            measured = self.clock.seconds(self.stream.duration + self.clock.start_pts)
        else:
            measured = (self.container.duration or 0) / av.time_base
        counted = self.stream.frames / self.fps() if self.stream.frames and self.fps() else 0.0
        return max(measured, counted)

    def fps(self) -> float:
        rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        return float(rate) if rate else 0.0

    def seek(self, seconds: float) -> None:
        self.container.seek(self.clock.pts(max(0.0, seconds)), stream=self.stream, backward=True)

    def frames(self) -> Iterator[tuple[float, av.video.frame.VideoFrame]]:
        last = -1.0
        for frame in self.container.decode(self.stream):
            self.decoded += 1
            time_s = self.clock.seconds(frame.pts) if frame.pts is not None else last + 1 / max(self.fps(), 1.0)
            last = time_s
            yield time_s, frame

    def packets(self, start_s: float, end_s: float) -> tuple[list[float], list[bool]]:
        """Presentation times and keyframe flags from the keyframe before ``start_s`` to ``end_s``."""
        self.seek(start_s)
        seen: list[tuple[float, bool]] = []
        for packet in self.container.demux(self.stream):
            if packet.size == 0 or packet.pts is None:
                continue
            seen.append((self.clock.seconds(packet.pts), packet.is_keyframe))
            order = packet.dts if packet.dts is not None else packet.pts
            if self.clock.seconds(order) >= end_s:
                break
        seen.sort()
        keys = [k for _, k in seen]
        if len(keys) > 1 and all(keys) and not self.stream.codec_context.codec.intra_only:
            # Every packet of an inter-coded stream "key": the demuxer guessed (an AVI cut before
            # its index). Trust only the first; the decode plan then prefers one pass.
            keys = [True] + [False] * (len(keys) - 1)
        return [t for t, _ in seen], keys

    def close(self) -> None:
        self.container.close()


def probe(source: Source) -> VideoInfo:
    """Duration, rate, size, codec and keyframe interval, from headers and packets (no decoding)."""
    video = _Video(source)
    try:
        times, keys = video.packets(0.0, _PROBE_SCAN_S)
        key_times = [t for t, k in zip(times, keys, strict=True) if k]
        span = (times[-1] - times[0]) if len(times) > 1 else video.duration_s()
        return video.info(keyframe_interval(key_times, span))
    except av.error.FFmpegError as exc:
        raise classify(exc) from None
    finally:
        video.close()


def video_duration(source: Source) -> float:
    """The duration the headers declare (0.0 when they declare none); reads no packets."""
    video = _Video(source)
    try:
        return video.duration_s()
    finally:
        video.close()


def sample_segment(
    source: Source,
    start_s: float,
    end_s: float,
    sample_fps: float,
    max_side: int = 1024,
    jpeg_quality: int = 90,
    max_frames: int = 600,
    *,
    max_pixels: int = 64_000_000,
    mode: ModeChoice = "auto",
) -> SegmentResult:
    """Frames of ``[start_s, end_s)`` at ``sample_fps``, as bounded baseline JPEGs.

    Never raises for bad media: the error comes back in the result beside the frames decoded
    before it. ``max_frames`` refuses a segment whose sample count is over it (no frames).
    """
    error = check_request(start_s, end_s, sample_fps, max_frames)
    if error is not None:
        return SegmentResult([], error)
    try:
        video = _Video(source)
    except DecodeError as exc:
        return SegmentResult([], exc)
    try:
        return _sample(video, start_s, end_s, sample_fps, _Encoder(max_side, jpeg_quality), max_pixels, mode)
    finally:
        video.close()


def check_request(start_s: float, end_s: float, sample_fps: float, max_frames: int) -> DecodeError | None:
    if not (start_s >= 0 and end_s > start_s and sample_fps > 0):
        reason = f"need 0 <= start < end and fps > 0, got [{start_s}, {end_s}) at {sample_fps} fps"
        return DecodeError("invalid_segment", reason)
    wanted = count_targets(start_s, end_s, sample_fps)
    if wanted > max_frames:
        return DecodeError("too_many_frames", f"{wanted} frames requested, over the limit of {max_frames}")
    return None


def _sample(
    video: _Video, start_s: float, end_s: float, fps: float, encoder: _Encoder, max_pixels: int, mode: ModeChoice
) -> SegmentResult:
    ctx = video.stream.codec_context
    if ctx.width * ctx.height > max_pixels:
        return SegmentResult([], DecodeError("pixel_bomb", f"{ctx.width}x{ctx.height} is over {max_pixels} pixels"))
    duration = video.duration_s()
    if duration and start_s >= duration:
        reason = f"segment starts at {start_s} s, the video lasts {duration:.3f} s"
        return SegmentResult([], DecodeError("segment_out_of_range", reason))
    wanted = targets(start_s, end_s, fps)
    run = _Run(video, encoder, end_s)
    try:
        plan = _plan(video, wanted, mode)
        run.mode = plan
        run.sequential(wanted) if plan == "sequential" else run.seek(wanted)
    except av.error.FFmpegError as exc:
        return run.result(classify(exc))
    except DecodeError as exc:
        return run.result(exc)
    return run.result(_truncation(run, wanted, duration))


def _plan(video: _Video, wanted: list[Target], mode: ModeChoice) -> Mode:
    if mode != "auto" or not wanted:
        return "sequential" if mode == "auto" else mode
    times, keys = video.packets(wanted[0].time_s, wanted[-1].time_s)
    chosen = choose_mode(times, keys, [t.time_s for t in wanted])
    logger.debug("decode plan %s for %d targets over %d packets", chosen, len(wanted), len(times))
    return chosen


class _Run:
    """One sampling pass: collects frames; stops at ``end_s``."""

    def __init__(self, video: _Video, encoder: _Encoder, end_s: float) -> None:
        self.video, self.encoder, self.end_s = video, encoder, end_s
        self.frames: list[SampledFrame] = []
        self.mode: Mode = "sequential"
        self.reached_end = False  # a frame at or past end_s (or the last target) was decoded

    def sequential(self, wanted: list[Target]) -> None:
        if not wanted:
            return
        pending = deque(wanted)
        for time_s, frame in self.video.start_at(wanted[0].time_s):
            matched = None
            while pending and time_s >= pending[0].time_s - _EPS:
                target = pending.popleft()  # several targets can share one frame (sampling above its rate)
                matched = matched or target
            if matched is not None:
                self._keep(matched, time_s, frame)
            if not pending or time_s >= self.end_s:
                self.reached_end = True
                return

    def seek(self, wanted: list[Target]) -> None:
        for target in wanted:
            if self.frames and self.frames[-1].timestamp_s >= target.time_s - _EPS:
                continue  # the frame for this target was already taken for the previous one
            found = next(((t, f) for t, f in self.video.start_at(target.time_s) if t >= target.time_s - _EPS), None)
            if found is None:
                return
            self._keep(target, *found)
        self.reached_end = True

    def _keep(self, target: Target, time_s: float, frame: av.video.frame.VideoFrame) -> None:
        if time_s >= self.end_s:
            self.reached_end = True
            return
        jpeg, width, height = self.encoder.encode(frame, self.video.stream.sample_aspect_ratio)
        self.frames.append(SampledFrame(target.index, time_s, jpeg, width, height))

    def result(self, error: DecodeError | None) -> SegmentResult:
        return SegmentResult(list(self.frames), error, self.mode, self.video.decoded)


def _truncation(run: _Run, wanted: list[Target], duration_s: float) -> DecodeError | None:
    """Data that ended before a target the header says exists means a cut file."""
    if run.reached_end or not wanted:
        return None
    last = run.frames[-1].timestamp_s if run.frames else None
    missing = [t for t in wanted if last is None or t.time_s > last + _EPS]
    frame_s = 1 / run.video.fps() if run.video.fps() else 0.0
    if missing and duration_s and missing[0].time_s < duration_s - frame_s - _EPS:
        where = f"after {last:.3f} s" if last is not None else "before the first frame"
        return DecodeError("truncated_video", f"video data ends {where}; the header declares {duration_s:.3f} s")
    return None


class _Encoder:
    """A decoded frame to an upright, display-aspect, bounded RGB baseline JPEG."""

    def __init__(self, max_side: int, quality: int) -> None:
        self.max_side, self.quality = max_side, quality

    def encode(self, frame: av.video.frame.VideoFrame, sar: Fraction | None) -> tuple[bytes, int, int]:
        width, height = _display_size(frame, sar)
        scale = min(1.0, self.max_side / max(width, height))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = frame.reformat(width=size[0], height=size[1], format="rgb24", interpolation="AREA").to_image()
        image = _rotate(image, frame.rotation)
        return encode_jpeg(image, self.quality), image.width, image.height


def _display_size(frame: av.video.frame.VideoFrame, sar: Fraction | None) -> tuple[int, int]:
    """Stored size corrected by the stream's sample aspect ratio (anamorphic video)."""
    if sar and sar.numerator > 0 and sar.denominator > 0 and sar != 1:
        return max(1, round(frame.width * float(sar))), frame.height
    return frame.width, frame.height


def _rotate(image: Image.Image, degrees: int) -> Image.Image:
    """Apply the display matrix (phones store portrait video as rotated landscape)."""
    turns = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
    step = turns.get(degrees % 360)
    return image.transpose(step) if step is not None else image


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    for q in (quality, 75, 55, 40):
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=q, progressive=False, optimize=False)
        if buf.tell() <= MAX_JPEG_BYTES:
            return buf.getvalue()
    raise DecodeError("frame_too_large", f"JPEG over {MAX_JPEG_BYTES} bytes even at low quality")

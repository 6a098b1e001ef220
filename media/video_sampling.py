"""Pure arithmetic of video sampling: segment bounds, sample targets and the decode plan.

Targets lie on one grid per media, ``k / sample_fps`` for integer ``k``, so cutting a video into
segments and sampling each gives exactly the samples of the whole video: no gap and no
duplicate at a boundary, and ``k`` is a stable frame index across segments (``frame_index`` of
``media.frames`` is the sample number within the media).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Mode = Literal["seek", "sequential"]
# Guards float noise such as 0.1 * 3 * 10 = 3.0000000000000004 when mapping seconds to the grid.
_EPS = 1e-9
# What one seek costs, in decoded-frame equivalents (demuxer reposition and decoder flush).
SEEK_COST_FRAMES = 2.0


@dataclass(frozen=True)
class Target:
    index: int  # sample number within the media
    time_s: float


def segments(duration_s: float, segment_s: float) -> list[tuple[float, float]]:
    """``[start, end)`` pairs covering ``[0, duration_s)``; the last one is clipped to the duration."""
    if segment_s <= 0:
        raise ValueError(f"segment length must be positive, got {segment_s}")
    if duration_s <= 0:
        return []
    count = math.ceil(duration_s / segment_s - _EPS)
    return [(k * segment_s, min((k + 1) * segment_s, duration_s)) for k in range(count)]


def targets(start_s: float, end_s: float, sample_fps: float) -> list[Target]:
    """Grid times ``k / sample_fps`` with ``start_s <= t < end_s``."""
    first = math.ceil(start_s * sample_fps - _EPS)
    stop = math.ceil(end_s * sample_fps - _EPS)
    return [Target(k, k / sample_fps) for k in range(first, stop)]


def count_targets(start_s: float, end_s: float, sample_fps: float) -> int:
    first = math.ceil(start_s * sample_fps - _EPS)
    return max(0, math.ceil(end_s * sample_fps - _EPS) - first)


def keyframe_interval(keyframe_times: Sequence[float], span_s: float) -> float:
    """Mean gap between keyframes; with fewer than two seen, the scanned span is a lower bound."""
    if len(keyframe_times) < 2:
        return span_s
    return (keyframe_times[-1] - keyframe_times[0]) / (len(keyframe_times) - 1)


def choose_mode(packet_times: Sequence[float], keyframe_flags: Sequence[bool], wanted: Sequence[float]) -> Mode:
    """Seek per target when that decodes fewer frames than one pass from the first keyframe.

    ``packet_times`` (seconds, ascending presentation order) and ``keyframe_flags`` describe the
    packets from the keyframe at or before the first target to the last target. Seeking decodes,
    for each target, the frames from its preceding keyframe up to it; a pass decodes them all
    once. Sparse keyframes (an interval longer than the sampling interval) make seeking lose.
    """
    if not wanted or not packet_times:
        return "sequential"
    key_positions = [i for i, key in enumerate(keyframe_flags) if key] or [0]
    sequential = float(_first_at_or_after(packet_times, wanted[-1]) + 1)
    seek = 0.0
    for time_s in wanted:
        frame = _first_at_or_after(packet_times, time_s)
        key = max((k for k in key_positions if k <= frame), default=0)
        seek += frame - key + 1 + SEEK_COST_FRAMES
    return "seek" if seek < sequential else "sequential"


def _first_at_or_after(times: Sequence[float], time_s: float) -> int:
    for i, t in enumerate(times):
        if t >= time_s - _EPS:
            return i
    return len(times) - 1

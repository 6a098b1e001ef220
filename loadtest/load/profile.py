"""What a load run offers: rate, duration, media mix, server latency, bandwidth and failure mix.

A :class:`LoadProfile` is plain data (the ``load`` object of a budget file). :func:`plan_media`
turns the profile and a media's index into that media's request: image or video segment, the
server's delay drawn from the latency model, and its planned fate (``ok`` or a failure kind of
:data:`loadtest.load.server.FAILURES`). The plan of media ``i`` depends only on the profile's
seed and ``i``, so a run is reproducible and a report can set the dead letters against the plan.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field, fields
from typing import Any
from urllib.parse import urlencode

from loadtest.load.server import FAILURES


@dataclass(frozen=True)
class LatencyModel:
    """Server delay before the response: lognormal body, Pareto tail, capped.

    With probability ``tail_share`` the delay is ``tail_min_s`` times a Pareto(``tail_alpha``)
    draw (alpha <= 2: infinite variance, the heavy tail of real origins); otherwise it is
    lognormal with median ``median_s`` and shape ``sigma``. Every delay is capped at ``max_s``,
    kept under the fetch stage's read timeout so that latency stays latency, not a failure.
    """

    median_s: float = 0.03
    sigma: float = 0.8
    tail_share: float = 0.02
    tail_alpha: float = 1.5
    tail_min_s: float = 0.4
    max_s: float = 2.0

    def draw(self, rng: random.Random) -> float:
        if rng.random() < self.tail_share:
            delay = self.tail_min_s * rng.paretovariate(self.tail_alpha)
        else:
            delay = self.median_s * math.exp(self.sigma * rng.gauss(0.0, 1.0))
        return min(self.max_s, max(0.0, delay))


@dataclass(frozen=True)
class LoadProfile:
    """The load of one run.

    ``rate`` None publishes as fast as the pipeline takes requests: a closed loop keeping
    ``max_in_flight`` media unfinished. ``max_media`` caps either mode.
    """

    rate: float | None = 3.0
    duration_s: float = 120.0
    max_media: int | None = None
    max_in_flight: int = 256
    seed: int = 1
    video_share: float = 0.0
    video_segment_s: float = 4.0
    video_fps: float = 1.0
    bandwidth_bps: int = 8_000_000
    latency: LatencyModel = field(default_factory=LatencyModel)
    failures: dict[str, float] = field(default_factory=dict)
    spaces: tuple[str, ...] = ("scene",)
    warmup_media: int = 8

    def __post_init__(self) -> None:
        unknown = set(self.failures) - set(FAILURES)
        if unknown:
            raise ValueError(f"unknown failure kinds {sorted(unknown)}; known: {', '.join(FAILURES)}")
        if sum(self.failures.values()) + self.video_share > 1.0 + 1e-9:
            raise ValueError("failure shares and the video share add up to more than 1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive (or null: as fast as possible)")
        if self.duration_s <= 0:
            raise ValueError("duration_s must be positive")

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> LoadProfile:
        known = {f.name for f in fields(cls)}
        unknown = set(doc) - known
        if unknown:
            raise ValueError(f"unknown load keys {sorted(unknown)}; known: {sorted(known)}")
        values = dict(doc)
        if "latency" in values:
            values["latency"] = LatencyModel(**values["latency"])
        if "spaces" in values:
            values["spaces"] = tuple(values["spaces"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["spaces"] = list(self.spaces)
        return doc

    def media_count(self) -> int | None:
        """Media a fixed-rate run publishes (None when as fast as possible without a cap)."""
        if self.rate is None:
            return self.max_media
        n = math.floor(self.rate * self.duration_s)
        return min(n, self.max_media) if self.max_media is not None else n


@dataclass(frozen=True)
class PlannedMedia:
    """One request of the run and what the server will do with it."""

    media_id: str
    kind: str  # image | video
    path: str  # path and query on the load server
    fate: str  # ok | a failure kind
    delay_s: float
    start_s: float | None = None
    end_s: float | None = None
    sample_fps: float | None = None


def load_path(name: str, seed: str, *, delay_s: float = 0.0, bw: int = 0, fail: str = "") -> str:
    """The load server's path for ``name`` with this behaviour."""
    query: dict[str, str] = {"seed": seed}
    if delay_s > 0:
        query["delay"] = f"{delay_s:.4f}"
    if bw > 0:
        query["bw"] = str(bw)
    if fail:
        query["fail"] = fail
    return f"/load/{name}?{urlencode(query)}"


def _fate(profile: LoadProfile, u: float) -> str:
    edge = 0.0
    for kind in FAILURES:
        edge += profile.failures.get(kind, 0.0)
        if u < edge:
            return kind
    return "ok"


def plan_media(
    profile: LoadProfile, index: int, run_id: str, images: list[str], video: str | None, video_length_s: float = 0.0
) -> PlannedMedia:
    """Media ``index`` of the run: deterministic in (profile.seed, index)."""
    rng = random.Random(f"{profile.seed}:{index}")
    media_id = f"{run_id}-{index:07d}"
    u = rng.random()
    fate = _fate(profile, u)
    delay = profile.latency.draw(rng)
    is_video = fate == "ok" and video is not None and u >= 1.0 - profile.video_share
    if not is_video:
        name = images[index % len(images)]
        path = load_path(name, media_id, delay_s=delay, bw=profile.bandwidth_bps, fail="" if fate == "ok" else fate)
        return PlannedMedia(media_id, "image", path, fate, delay)
    assert video is not None
    start = round(rng.uniform(0.0, max(0.0, video_length_s - profile.video_segment_s)), 1)
    path = load_path(video, media_id, delay_s=delay, bw=profile.bandwidth_bps)
    end = start + profile.video_segment_s
    return PlannedMedia(media_id, "video", path, "ok", delay, start, end, profile.video_fps)

"""The figures of a load run, computed from the tracker's outcomes and the monitor's samples.

Definitions (also printed in every report):

- sustained media/s (frames/s, vectors/s): media finished (stored or dead-lettered; frames and
  vectors stored) per second in the measuring window, which runs from 10% into the run to the
  last publish (fixed rate) or to the last completion (as fast as possible);
- latency: publish (the generator's clock before ``produce``) to stored (the first tracker poll
  that saw the sink's committed offset past the media's every frame), stored media only;
  percentiles by nearest rank, so p50 <= p95 <= p99 always;
- success rate: stored / finished; for the planned-good media alone, stored / planned good;
- unexpected: planned-good media that failed plus planned failures that were stored.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from loadtest.load.monitor import Sample
from loadtest.load.tracker import MediaOutcome, Stored

RAMP = 0.10  # share of the run left out at the start of the measuring window


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class LoadReport:
    run_id: str
    mode: str  # run | soak
    profile: dict[str, Any]
    published: int
    stored: int
    failed: int
    unfinished: int
    frames: int
    vectors: int
    window_s: float
    media_per_s: float
    frames_per_s: float
    vectors_per_s: float
    offered_per_s: float
    drain_s: float  # last publish to last completion
    latency_s: dict[str, float]
    hops_s: dict[str, dict[str, float]]  # hop -> p50, p95 (stored media)
    success_rate: float
    planned_ok_success_rate: float
    unexpected: int
    causes: dict[str, int]
    causes_by_fate: dict[str, dict[str, int]]
    final_lag: dict[str, int]
    max_lag: dict[str, int]
    peak_rss_mb: dict[str, float]
    poll_s: float
    monitor_s: float
    lag_series: list[tuple[float, dict[str, int]]] = field(default_factory=list)  # seconds since start
    rss_series: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    throughput_series: list[tuple[float, float, float]] = field(default_factory=list)  # t, media/s, frames/s
    partial: str = ""  # why the report covers less than the planned run (a checkpoint, an interrupt); "" if whole

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> LoadReport:
        """A report read back from :meth:`to_dict`'s JSON (series rows become tuples again)."""
        return cls(
            **{
                **doc,
                "lag_series": [(t, d) for t, d in doc.get("lag_series", [])],
                "rss_series": [(t, d) for t, d in doc.get("rss_series", [])],
                "throughput_series": [(t, m, f) for t, m, f in doc.get("throughput_series", [])],
            }
        )


@dataclass(frozen=True)
class RunFacts:
    """Everything a run observed, handed to :func:`summarize`."""

    run_id: str
    mode: str
    profile: dict[str, Any]
    fixed_rate: bool
    media: dict[str, MediaOutcome]
    stored: list[Stored]
    samples: list[Sample]
    peak_rss_mb: dict[str, float]
    final_lag: dict[str, int]
    poll_s: float
    monitor_s: float


def _window(facts: RunFacts) -> tuple[float, float]:
    outcomes = list(facts.media.values())
    t0 = min(m.published_at for m in outcomes)
    done = [m.done_at for m in outcomes if m.done_at is not None]
    last_publish = max(m.published_at for m in outcomes)
    end = last_publish if facts.fixed_rate else max(done, default=last_publish)
    return t0 + RAMP * (end - t0), end


def _rates(facts: RunFacts, start: float, end: float) -> tuple[float, float, float]:
    span = max(end - start, 1e-9)
    media = sum(1 for m in facts.media.values() if m.done_at is not None and start <= m.done_at <= end)
    batches = [s for s in facts.stored if start <= s.at <= end]
    return media / span, sum(s.frames for s in batches) / span, sum(s.vectors for s in batches) / span


def _latency(outcomes: list[MediaOutcome]) -> dict[str, float]:
    values = [m.latency_s for m in outcomes if m.latency_s is not None]
    if not values:
        return {}
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": sum(values) / len(values),
    }


def _stamps(m: MediaOutcome) -> tuple[float, float, float, float] | None:
    if m.framed_at is None or m.vectored_at is None or m.stored_at is None:
        return None
    return m.published_at, m.framed_at, m.vectored_at, m.stored_at


def _hops(stored: list[MediaOutcome]) -> dict[str, dict[str, float]]:
    """Publish -> last frame produced -> last vector batch produced -> stored, p50 and p95 of each."""
    timed = [t for t in map(_stamps, stored) if t is not None]
    hops = {
        "publish -> frames (fetch)": [t[1] - t[0] for t in timed],
        "frames -> vectors (embed)": [t[2] - t[1] for t in timed],
        "vectors -> stored (sink)": [t[3] - t[2] for t in timed],
    }
    return {k: {"p50": percentile(v, 50), "p95": percentile(v, 95)} for k, v in hops.items() if v}


def _causes(outcomes: list[MediaOutcome]) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    causes: Counter[str] = Counter()
    by_fate: dict[str, Counter[str]] = {}
    for m in outcomes:
        outcome = m.cause if m.failed_at is not None else ("stored" if m.stored_at is not None else "unfinished")
        by_fate.setdefault(m.fate, Counter())[outcome or "unknown"] += 1
        if m.failed_at is not None:
            causes[m.cause or "unknown"] += 1
    return dict(causes.most_common()), {fate: dict(c.most_common()) for fate, c in sorted(by_fate.items())}


def _series(facts: RunFacts, t0: float, bucket_s: float) -> list[tuple[float, float, float]]:
    """Stored media/s and frames/s per bucket since ``t0``."""
    media: Counter[int] = Counter()
    frames: Counter[int] = Counter()
    for m in facts.media.values():
        if m.stored_at is not None and m.failed_at is None:
            media[int((m.stored_at - t0) // bucket_s)] += 1
    for s in facts.stored:
        frames[int((s.at - t0) // bucket_s)] += s.frames
    last = max([*media, *frames], default=-1)
    return [((i + 1) * bucket_s, media[i] / bucket_s, frames[i] / bucket_s) for i in range(last + 1)]


def summarize(facts: RunFacts) -> LoadReport:
    outcomes = list(facts.media.values())
    if not outcomes:
        raise ValueError("nothing was published")
    t0 = min(m.published_at for m in outcomes)
    start, end = _window(facts)
    media_s, frames_s, vectors_s = _rates(facts, start, end)
    stored = [m for m in outcomes if m.stored_at is not None and m.failed_at is None]
    failed = [m for m in outcomes if m.failed_at is not None]
    done = [m.done_at for m in outcomes if m.done_at is not None]
    planned_ok = [m for m in outcomes if m.fate == "ok"]
    unexpected = sum(1 for m in planned_ok if m.failed_at is not None) + sum(1 for m in stored if m.fate != "ok")
    causes, by_fate = _causes(outcomes)
    last_publish = max(m.published_at for m in outcomes)
    lag_series = [(s.at - t0, dict(s.lag)) for s in facts.samples]
    return LoadReport(
        run_id=facts.run_id,
        mode=facts.mode,
        profile=facts.profile,
        published=len(outcomes),
        stored=len(stored),
        failed=len(failed),
        unfinished=len(outcomes) - len(stored) - len(failed),
        frames=sum(s.frames for s in facts.stored),
        vectors=sum(s.vectors for s in facts.stored),
        window_s=end - start,
        media_per_s=media_s,
        frames_per_s=frames_s,
        vectors_per_s=vectors_s,
        offered_per_s=(len(outcomes) - 1) / (last_publish - t0) if last_publish > t0 else 0.0,
        drain_s=max(done, default=last_publish) - last_publish,
        latency_s=_latency(outcomes),
        hops_s=_hops(stored),
        success_rate=len(stored) / len(done) if done else 0.0,
        planned_ok_success_rate=_stored_share(planned_ok),
        unexpected=unexpected,
        causes=causes,
        causes_by_fate=by_fate,
        final_lag=dict(facts.final_lag),
        max_lag=_max_lag(facts.samples, facts.final_lag),
        peak_rss_mb=dict(facts.peak_rss_mb),
        poll_s=facts.poll_s,
        monitor_s=facts.monitor_s,
        lag_series=lag_series,
        rss_series=[(s.at - t0, dict(s.rss_mb)) for s in facts.samples],
        throughput_series=_series(facts, t0, max(5.0, facts.monitor_s)),
    )


def _stored_share(outcomes: list[MediaOutcome]) -> float:
    if not outcomes:
        return 1.0
    return sum(1 for m in outcomes if m.stored_at is not None and m.failed_at is None) / len(outcomes)


def _max_lag(samples: list[Sample], final: dict[str, int]) -> dict[str, int]:
    out = dict(final)
    for s in samples:
        for stage, lag in s.lag.items():
            out[stage] = max(out.get(stage, 0), lag)
    return out

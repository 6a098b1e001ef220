"""The bound a load plan puts on any client (loadtest.load.peer.plan_bound), which the comparison
with img2dataset prints beside both tools' rates."""

from __future__ import annotations

import math

import pytest

from loadtest.load.peer import plan_bound
from loadtest.load.profile import LatencyModel, LoadProfile


def profile(median_s: float, bandwidth_bps: int) -> LoadProfile:
    latency = LatencyModel(median_s=median_s, sigma=0.0, tail_share=0.0)
    return LoadProfile(latency=latency, bandwidth_bps=bandwidth_bps, failures={}, video_share=0.0)


def test_the_bound_is_concurrency_over_the_mean_time_per_media() -> None:
    sizes = {"a.jpg": 100, "b.jpg": 300}
    # a: 0.1 s delay + 100 B at 1,000 B/s; b: 0.1 s + 0.3 s; mean 0.3 s, so 4 open requests make 13.3/s
    got = plan_bound(profile(0.1, 1000), 10, ["a.jpg", "b.jpg"], sizes, 4)
    assert got == pytest.approx(4 / 0.3)


def test_without_a_bandwidth_limit_only_the_delay_counts() -> None:
    assert plan_bound(profile(0.05, 0), 7, ["a.jpg"], {"a.jpg": 10**9}, 32) == pytest.approx(32 / 0.05)
    assert math.isinf(plan_bound(profile(0.0, 0), 3, ["a.jpg"], {"a.jpg": 1}, 8))


def test_the_spread_and_tail_of_the_default_delays_lower_the_bound() -> None:
    tail = LoadProfile(failures={}, video_share=0.0)
    body = profile(0.03, tail.bandwidth_bps)
    sizes = {"a.jpg": 100_000}
    assert plan_bound(tail, 2000, ["a.jpg"], sizes, 32) < plan_bound(body, 2000, ["a.jpg"], sizes, 32)

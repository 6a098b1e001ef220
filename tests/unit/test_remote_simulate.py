"""The issue's benchmark in miniature, in virtual time: adaptive flow control against fixed semaphores.

A simulated provider enforces a token-bucket quota and a concurrency cap. The seed's design (a fixed
semaphore of 5 API calls) either leaves most of a large quota unused or floods a small one with
429s; the adaptive limiter (with the user's quota where the user knows it) finds the capacity.
Counts are of virtual time and simulated calls: no wall clock is measured.
"""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest

from models.remote.breaker import CircuitBreaker
from models.remote.limiter import AdaptiveLimiter
from models.remote.quota import Quota
from models.remote.simulate import ProviderSpec, SimResult, SimulatedProvider, run_adaptive, run_fixed, run_virtual

LARGE = ProviderSpec(requests_per_s=40, burst=40, latency_s=0.25)  # needs ~10 calls in flight
SMALL = ProviderSpec(requests_per_s=8, burst=8, latency_s=0.25)  # 2 in flight suffice
ROUGH = ProviderSpec(requests_per_s=40, burst=40, latency_s=0.25, tail_p=0.05, error_p=0.01)


def fixed(spec: ProviderSpec, items: int, concurrency: int = 5) -> SimResult:
    return run_virtual(run_fixed(SimulatedProvider(spec, random.Random(1)), items, concurrency=concurrency))


def adaptive(spec: ProviderSpec, items: int, quota: Quota | None = None) -> SimResult:
    return run_virtual(run_adaptive(SimulatedProvider(spec, random.Random(1)), items, quota=quota))


def users_quota(spec: ProviderSpec) -> Quota:
    return Quota(requests_per_s=spec.requests_per_s, request_burst=spec.burst)


def test_fixed_five_undershoots_a_large_quota_and_adaptive_fills_it() -> None:
    seed, ours = fixed(LARGE, 2400), adaptive(LARGE, 2400)
    assert seed.quota_fraction < 0.6
    assert ours.quota_fraction >= 0.9
    assert ours.rate_limited_per_1000 < 20
    assert ours.success_rate == 1.0


def test_fixed_five_floods_a_small_quota_and_adaptive_with_the_users_quota_does_not() -> None:
    seed, ours = fixed(SMALL, 480), adaptive(SMALL, 480, quota=users_quota(SMALL))
    assert seed.rate_limited_per_1000 > 300
    assert seed.success_rate < 1.0  # retries ran out for some items
    assert ours.quota_fraction >= 0.9
    assert ours.rate_limited_per_1000 < 5
    assert ours.success_rate == 1.0


def test_without_the_users_quota_the_rate_limit_headers_pace_the_calls() -> None:
    ours = adaptive(SMALL, 480)
    assert ours.quota_fraction >= 0.9
    assert ours.rate_limited_per_1000 < 5  # the budget mirror waits before the provider must refuse
    assert ours.success_rate == 1.0


def test_with_neither_quota_nor_headers_the_429s_alone_still_tame_the_flood() -> None:
    bare = dataclasses.replace(SMALL, headers=False)  # Retry-After only
    seed, ours = fixed(bare, 480), adaptive(bare, 480)
    assert ours.quota_fraction >= 0.9
    assert ours.rate_limited_per_1000 < seed.rate_limited_per_1000 / 4
    assert ours.success_rate == 1.0


def test_a_latency_tail_and_random_500s_do_not_stall_the_limiter() -> None:
    ours = adaptive(ROUGH, 2400, quota=users_quota(ROUGH))
    assert ours.quota_fraction >= 0.85
    assert ours.success_rate == 1.0


def test_a_concurrency_capped_server_is_found_by_its_latency() -> None:
    capped = ProviderSpec(requests_per_s=1000, burst=1000, workers=8, capacity=24, latency_s=0.1)
    capacity_per_s = capped.workers / capped.latency_s
    seed, ours = fixed(capped, 3000), adaptive(capped, 3000)
    assert seed.throughput < 0.7 * capacity_per_s
    assert ours.throughput >= 0.85 * capacity_per_s
    assert ours.overloaded <= 10  # queueing showed in latency before the server had to refuse


@pytest.mark.parametrize("concurrency", [5, 10])
def test_the_users_quota_is_never_exceeded_at_the_provider(concurrency: int) -> None:
    spec = ProviderSpec(requests_per_s=100, burst=100, latency_s=0.05)
    provider = SimulatedProvider(spec, random.Random(2))
    limiter = AdaptiveLimiter(initial_limit=concurrency, max_limit=concurrency)
    quota = Quota(requests_per_s=10, request_burst=1)
    result = run_virtual(run_adaptive(provider, 300, limiter=limiter, quota=quota))
    accepted = provider.stats.accepted_at
    assert all(b - a >= 0.1 - 1e-9 for a, b in itertools.pairwise(accepted))  # 10/s, burst 1
    assert result.quota_fraction == pytest.approx(0.1, rel=0.02)


def test_a_provider_down_opens_the_circuit_and_the_run_still_finishes() -> None:
    broken = ProviderSpec(requests_per_s=40, burst=40, latency_s=0.05, error_p=0.6)
    provider = SimulatedProvider(broken, random.Random(3))
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=0.5)
    result = run_virtual(run_adaptive(provider, 200, breaker=breaker))
    assert breaker.opened_total > 0
    assert result.success_rate > 0.9

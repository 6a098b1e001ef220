"""The user's quota is a hard ceiling: requests/s and tokens/min, checked over every window."""

from __future__ import annotations

import asyncio
import bisect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.remote.quota import Quota, QuotaExceeded, estimate_text_tokens
from models.remote.simulate import run_virtual


class FakeClock:
    """An injected clock whose sleep advances it: the quota's own test seam."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def most_in_any_window(times: list[float], amounts: list[int], window: float) -> int:
    """The largest total of ``amounts`` sent within any ``window`` seconds (times sorted)."""
    best = 0
    for i, start in enumerate(times):
        j = bisect.bisect_right(times, start + window - 1e-9)
        best = max(best, sum(amounts[i:j]))
    return best


def test_requests_per_second_with_an_injected_clock() -> None:
    clock = FakeClock()
    quota = Quota(requests_per_s=2.0, clock=clock, sleep=clock.sleep)

    async def main() -> list[float]:
        times = []
        for _ in range(6):
            await quota.acquire()
            times.append(clock.now - 100.0)
        return times

    assert asyncio.run(main()) == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.5, 2.0])  # burst of 2, then 2/s
    assert quota.requests_used == 6


def test_tokens_per_minute_with_an_injected_clock() -> None:
    clock = FakeClock()
    quota = Quota(tokens_per_min=600, token_burst=100, clock=clock, sleep=clock.sleep)

    async def main() -> None:
        await quota.acquire(tokens=100)
        await quota.acquire(tokens=50)  # the bucket refills 10 tokens/s

    asyncio.run(main())
    assert clock.now - 100.0 == pytest.approx(5.0)
    assert quota.tokens_used == 150


@settings(max_examples=40, deadline=None)
@given(
    rps=st.floats(0.5, 50),
    tpm=st.floats(600, 60_000),
    burst_s=st.floats(0.1, 2.0),
    sizes=st.lists(st.integers(0, 300), min_size=5, max_size=60),
    callers=st.integers(1, 20),
)
def test_never_exceeded_in_any_window(rps: float, tpm: float, burst_s: float, sizes: list[int], callers: int) -> None:
    request_burst = max(1.0, rps * burst_s)
    token_burst = max(300.0, tpm / 60 * burst_s)
    quota = Quota(requests_per_s=rps, tokens_per_min=tpm, request_burst=request_burst, token_burst=token_burst)
    sent: list[tuple[float, int]] = []

    async def caller(mine: list[int]) -> None:
        for tokens in mine:
            await quota.acquire(tokens=tokens)
            sent.append((asyncio.get_running_loop().time(), tokens))

    async def main() -> None:
        await asyncio.gather(*(caller(sizes[i::callers]) for i in range(callers)))

    run_virtual(main())
    times, tokens = [t for t, _ in sent], [n for _, n in sent]
    assert len(sent) == len(sizes)
    for window in (0.5, 1.0, 10.0, 60.0):
        assert most_in_any_window(times, [1] * len(times), window) <= request_burst + rps * window + 1e-6
        assert most_in_any_window(times, tokens, window) <= token_burst + tpm / 60 * window + 1e-6


def test_callers_are_served_in_arrival_order() -> None:
    quota = Quota(tokens_per_min=60, token_burst=10)
    order: list[str] = []

    async def take(name: str, tokens: int) -> None:
        await quota.acquire(tokens=tokens)
        order.append(name)

    async def main() -> None:
        await quota.acquire(tokens=10)  # empty the bucket
        big = asyncio.create_task(take("big", 10))
        await asyncio.sleep(0)
        small = [asyncio.create_task(take(f"small{i}", 1)) for i in range(3)]
        await asyncio.gather(big, *small)

    run_virtual(main())
    assert order == ["big", "small0", "small1", "small2"]  # the small ones do not starve the big one


def test_a_request_larger_than_the_burst_fails_at_once() -> None:
    async def main() -> None:
        await Quota(tokens_per_min=1000, token_burst=100).acquire(tokens=101)

    with pytest.raises(QuotaExceeded, match="101 tokens"):
        run_virtual(main())


def test_no_limit_means_no_wait_and_usage_reports_the_buckets() -> None:
    async def main() -> tuple[float, dict[str, float], dict[str, float]]:
        free = Quota()
        for _ in range(1000):
            await free.acquire(tokens=10**6)
        capped = Quota(requests_per_s=4, tokens_per_min=600, token_burst=100)
        await capped.acquire(tokens=50)
        await capped.acquire(tokens=25)
        return asyncio.get_running_loop().time(), free.usage(), capped.usage()

    elapsed, free_use, capped_use = run_virtual(main())
    assert elapsed == 0.0
    assert free_use == {}
    assert capped_use == pytest.approx({"requests": 0.5, "tokens": 0.75})


def test_bad_settings_are_refused() -> None:
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            Quota(requests_per_s=bad)
        with pytest.raises(ValueError):
            Quota(tokens_per_min=bad)
    with pytest.raises(ValueError):
        asyncio.run(Quota().acquire(tokens=-1))


@pytest.mark.parametrize(("text", "tokens"), [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("x" * 400, 100)])
def test_text_tokens_are_a_quarter_of_the_characters_rounded_up(text: str, tokens: int) -> None:
    assert estimate_text_tokens(text) == tokens

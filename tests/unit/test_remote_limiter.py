"""The adaptive concurrency limit, driven call by call in virtual time (no real sleeping)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.remote.hints import RateHint
from models.remote.limiter import AdaptiveLimiter
from models.remote.retry import Outcome
from models.remote.simulate import run_virtual


async def one_call(limiter: AdaptiveLimiter, outcome: Outcome, latency: float = 0.1, **kw: object) -> None:
    async with limiter.slot() as slot:
        await asyncio.sleep(latency)
        slot.report(outcome, **kw)  # type: ignore[arg-type]


async def wave(limiter: AdaptiveLimiter, outcome: Outcome, latency: float = 0.1, n: int | None = None) -> None:
    """A round of calls that fills the limit, as a busy stage would."""
    await asyncio.gather(*(one_call(limiter, outcome, latency) for _ in range(n or limiter.limit)))


def test_starts_low_and_grows_while_calls_succeed_and_latency_holds() -> None:
    async def main() -> list[int]:
        limiter = AdaptiveLimiter(initial_limit=2, max_limit=50)
        seen = [limiter.limit]
        for _ in range(30):
            await wave(limiter, "ok")
            seen.append(limiter.limit)
        return seen

    seen = run_virtual(main())
    assert seen[0] == 2
    assert seen == sorted(seen)  # never cut
    assert 10 <= seen[-1] <= 32  # up to +1 per round: additive (doubling would hit 50 in six rounds)


def test_never_above_max_limit() -> None:
    async def main() -> int:
        limiter = AdaptiveLimiter(initial_limit=2, max_limit=6)
        for _ in range(60):
            await wave(limiter, "ok")
        return limiter.limit

    assert run_virtual(main()) == 6


def test_an_unused_limit_does_not_grow() -> None:
    async def main() -> int:
        limiter = AdaptiveLimiter(initial_limit=10, max_limit=50)
        for _ in range(200):
            await one_call(limiter, "ok")  # one call at a time: the limit of 10 is never in use
        return limiter.limit

    assert run_virtual(main()) == 10


@pytest.mark.parametrize(("outcome", "status"), [("rate_limited", 429), ("retriable", 503), ("retriable", None)])
def test_overload_cuts_multiplicatively_once_per_round(outcome: Outcome, status: int | None) -> None:
    async def main() -> int:
        limiter = AdaptiveLimiter(initial_limit=20, max_limit=50, backoff=0.5)
        await asyncio.gather(*(one_call(limiter, outcome, status=status) for _ in range(20)))
        return limiter.limit

    assert run_virtual(main()) == 10  # 20 failures sent under one limit: one cut, not twenty


def test_cuts_never_go_below_one() -> None:
    async def main() -> int:
        limiter = AdaptiveLimiter(initial_limit=8, backoff=0.5)
        for _ in range(20):
            await one_call(limiter, "rate_limited")
        return limiter.limit

    assert run_virtual(main()) == 1


@pytest.mark.parametrize(("outcome", "status"), [("permanent", 400), ("retriable", 500), ("retriable", 502)])
def test_item_faults_and_server_faults_leave_the_limit_alone(outcome: Outcome, status: int) -> None:
    async def main() -> int:
        limiter = AdaptiveLimiter(initial_limit=8)
        await asyncio.gather(*(one_call(limiter, outcome, status=status) for _ in range(8)))
        return limiter.limit

    assert run_virtual(main()) == 8


def test_rising_latency_cuts() -> None:
    async def main() -> tuple[int, int]:
        limiter = AdaptiveLimiter(initial_limit=2, max_limit=100, latency_backoff=0.8)
        for _ in range(40):
            await wave(limiter, "ok", latency=0.1)
        grown = limiter.limit
        for _ in range(5):
            await wave(limiter, "ok", latency=0.5)  # calls now queue at the provider
        return grown, limiter.limit

    grown, after = run_virtual(main())
    assert after < grown


def test_a_latency_tail_is_not_rising_latency() -> None:
    async def main() -> list[int]:
        limiter = AdaptiveLimiter(initial_limit=2, max_limit=100)
        seen = []
        for i in range(40):
            await asyncio.gather(
                *(one_call(limiter, "ok", 2.0 if j == 0 and i % 3 == 0 else 0.1) for j in range(limiter.limit))
            )
            seen.append(limiter.limit)
        return seen

    seen = run_virtual(main())
    assert seen == sorted(seen) and seen[-1] > 10


def test_never_more_calls_in_flight_than_the_limit() -> None:
    async def main() -> tuple[int, int]:
        limiter = AdaptiveLimiter(initial_limit=3, max_limit=3)
        busy = peak = 0

        async def call() -> None:
            nonlocal busy, peak
            async with limiter.slot() as slot:
                busy += 1
                peak = max(peak, busy, limiter.in_flight)
                await asyncio.sleep(0.05)
                busy -= 1
                slot.report("ok")

        await asyncio.gather(*(call() for _ in range(50)))
        return peak, limiter.in_flight

    assert run_virtual(main()) == (3, 0)


def test_retry_after_pauses_new_slots_but_not_calls_in_flight() -> None:
    async def main() -> tuple[float, float, bool]:
        loop = asyncio.get_running_loop()
        limiter = AdaptiveLimiter(initial_limit=4)
        in_flight_done = asyncio.Event()

        async def long_call() -> None:
            async with limiter.slot():
                await asyncio.sleep(1.0)
                in_flight_done.set()

        task = asyncio.create_task(long_call())
        await asyncio.sleep(0)
        async with limiter.slot() as slot:
            slot.report("rate_limited", hint=RateHint(retry_after_s=5.0))
        assert 4.9 < limiter.paused_s <= 5.0
        async with limiter.slot():
            granted_at = loop.time()
        await task
        return granted_at, limiter.paused_s, in_flight_done.is_set()

    granted_at, paused_after, in_flight_finished = run_virtual(main())
    assert granted_at >= 5.0  # the next slot waited out the provider's Retry-After (virtual seconds)
    assert paused_after == 0.0
    assert in_flight_finished


def test_remaining_zero_pauses_until_reset_counted_from_the_send() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        limiter = AdaptiveLimiter()
        async with limiter.slot() as slot:
            slot.sent()
            await asyncio.sleep(0.5)  # the answer takes 0.5 s; the server measured its budget at the send
            slot.report("ok", hint=RateHint(remaining_requests=0, reset_requests_s=2.0))
        async with limiter.slot():
            return loop.time()

    assert run_virtual(main()) == pytest.approx(2.0)


def test_a_pause_is_capped() -> None:
    async def main() -> float:
        limiter = AdaptiveLimiter(max_pause_s=10.0)
        limiter.apply_hint(RateHint(retry_after_s=3000.0))
        return limiter.paused_s

    assert run_virtual(main()) == 10.0


def test_a_cancelled_waiter_leaks_no_slot() -> None:
    async def main() -> tuple[int, int]:
        limiter = AdaptiveLimiter(initial_limit=1, max_limit=1)
        release = asyncio.Event()

        async def holder() -> None:
            async with limiter.slot():
                await release.wait()

        held = asyncio.create_task(holder())
        await asyncio.sleep(0)
        waiters = [asyncio.create_task(one_call(limiter, "ok")) for _ in range(3)]
        await asyncio.sleep(0)
        waiters[0].cancel()
        release.set()
        await held
        await asyncio.gather(*waiters, return_exceptions=True)
        return limiter.in_flight, limiter.waiting

    assert run_virtual(main()) == (0, 0)


def test_a_slot_reports_once_and_an_unreported_slot_changes_nothing() -> None:
    async def main() -> int:
        limiter = AdaptiveLimiter(initial_limit=4, backoff=0.5)
        async with limiter.slot() as slot:
            slot.report("ok")
            slot.report("rate_limited")  # ignored
        with pytest.raises(RuntimeError):
            async with limiter.slot():
                raise RuntimeError("the client broke")
        return limiter.limit

    assert run_virtual(main()) == 4


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        AdaptiveLimiter(min_limit=0)
    with pytest.raises(ValueError):
        AdaptiveLimiter(min_limit=5, max_limit=4)
    with pytest.raises(ValueError):
        AdaptiveLimiter(backoff=1.5)


def test_a_budget_with_limit_and_reset_paces_new_slots_instead_of_waiting_for_it_whole() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        limiter = AdaptiveLimiter(initial_limit=8, max_limit=8)
        async with limiter.slot() as slot:  # the provider refills (10-0)/2 = 5 calls per second
            slot.report("ok", hint=RateHint(remaining_requests=0, limit_requests=10, reset_requests_s=2.0))
        granted = []
        for _ in range(3):
            async with limiter.slot():
                granted.append(loop.time())
        return granted

    assert run_virtual(main()) == pytest.approx([0.2, 0.4, 0.6])  # one per refill, not all after 2 s


HINTS = st.builds(
    RateHint,
    retry_after_s=st.floats(0, 3),
    remaining_requests=st.integers(0, 5),
    limit_requests=st.integers(0, 10),
    reset_requests_s=st.floats(0, 3),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ok", "retriable", "rate_limited", "permanent"]),
            st.floats(0.0, 5.0),
            st.sampled_from([None, 200, 429, 500, 503]),
            st.one_of(st.none(), HINTS),
        ),
        max_size=80,
    ),
    st.integers(1, 8),
    st.integers(1, 12),
)  # fmt: skip
def test_any_run_keeps_the_limit_in_bounds_and_the_calls_under_it(
    reports: list[tuple[Outcome, float, int | None, RateHint | None]], low: int, span: int
) -> None:
    async def main() -> tuple[int, int]:
        limiter = AdaptiveLimiter(initial_limit=low, min_limit=low, max_limit=low + span, max_pause_s=2.0)
        over = 0

        async def call(outcome: Outcome, latency: float, status: int | None, hint: RateHint | None) -> None:
            nonlocal over
            async with limiter.slot() as slot:
                over += limiter.in_flight > limiter.max_limit
                await asyncio.sleep(latency)
                slot.report(outcome, hint=hint, status=status)
                assert low <= limiter.limit <= low + span

        async with asyncio.timeout(3600):  # virtual: a stalled limiter fails here instead of hanging
            await asyncio.gather(*(call(*r) for r in reports))
        return over, limiter.in_flight

    assert run_virtual(main()) == (0, 0)

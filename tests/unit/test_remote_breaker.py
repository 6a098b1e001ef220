"""The circuit breaker: open on consecutive failures, cool down, probe once, close on success."""

from __future__ import annotations

import asyncio

import pytest

from models.remote.breaker import CircuitBreaker
from models.remote.retry import Outcome
from models.remote.simulate import run_virtual


async def call(breaker: CircuitBreaker, outcome: Outcome) -> bool:
    """One call through the breaker; True when it was the half-open probe."""
    async with breaker.admit() as ticket:
        ticket.record(outcome)
        return ticket.probe


async def fail(breaker: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        await call(breaker, "retriable")


def test_opens_after_consecutive_retriable_failures_only() -> None:
    async def main() -> list[str]:
        breaker = CircuitBreaker(failure_threshold=3)
        states: list[str] = []
        await fail(breaker, 2)
        await call(breaker, "ok")  # a success resets the count
        await fail(breaker, 2)
        await call(breaker, "rate_limited")  # busy is not broken: neither counts nor resets
        states.append(breaker.state)
        await fail(breaker, 1)
        states.append(breaker.state)
        return states

    assert run_virtual(main()) == ["closed", "open"]


def test_a_permanent_answer_proves_the_provider_up() -> None:
    async def main() -> str:
        breaker = CircuitBreaker(failure_threshold=3)
        await fail(breaker, 2)
        await call(breaker, "permanent")
        await fail(breaker, 2)
        return breaker.state

    assert run_virtual(main()) == "closed"


def test_open_holds_calls_for_the_cooldown_then_one_probe_closes_it() -> None:
    async def main() -> tuple[float, bool, str, int]:
        loop = asyncio.get_running_loop()
        breaker = CircuitBreaker(failure_threshold=2, cooldown_s=3.0)
        await fail(breaker, 2)
        assert breaker.open_for_s == 3.0
        probe = await call(breaker, "ok")
        return loop.time(), probe, breaker.state, breaker.opened_total

    admitted_at, probe, state, opened = run_virtual(main())
    assert admitted_at == 3.0  # virtual seconds: held for the whole cool-down
    assert probe and state == "closed" and opened == 1


def test_half_open_lets_exactly_one_probe_through() -> None:
    async def main() -> tuple[int, list[float]]:
        loop = asyncio.get_running_loop()
        breaker = CircuitBreaker(failure_threshold=1, cooldown_s=1.0)
        await fail(breaker, 1)
        out_at: list[float] = []
        probes = 0

        async def caller() -> None:
            nonlocal probes
            async with breaker.admit() as ticket:
                out_at.append(loop.time())
                probes += ticket.probe
                await asyncio.sleep(0.5)  # the probe takes its time; nobody else may go meanwhile
                ticket.record("ok")

        await asyncio.gather(*(caller() for _ in range(5)))
        return probes, out_at

    probes, out_at = run_virtual(main())
    assert probes == 1
    assert out_at[0] == 1.0 and all(t == 1.5 for t in out_at[1:])  # the rest waited for the probe's answer


def test_a_failed_probe_reopens_with_a_doubled_capped_cooldown() -> None:
    async def main() -> list[float]:
        breaker = CircuitBreaker(failure_threshold=1, cooldown_s=1.0, max_cooldown_s=5.0)
        await fail(breaker, 1)
        cooldowns = [breaker.open_for_s]
        for _ in range(4):
            await fail(breaker, 1)  # each is a probe after the cool-down, and fails
            cooldowns.append(breaker.open_for_s)
        await call(breaker, "ok")
        await fail(breaker, 1)
        cooldowns.append(breaker.open_for_s)  # a success reset the cool-down
        return cooldowns

    assert run_virtual(main()) == [1.0, 2.0, 4.0, 5.0, 5.0, 1.0]


def test_wait_closed_pauses_a_consumer_until_the_probe_succeeds() -> None:
    async def main() -> tuple[float, str]:
        loop = asyncio.get_running_loop()
        breaker = CircuitBreaker(failure_threshold=1, cooldown_s=2.0)
        await fail(breaker, 1)

        async def consumer() -> float:
            await breaker.wait_closed()
            return loop.time()

        paused = asyncio.create_task(consumer())
        await asyncio.sleep(0.1)
        assert not paused.done()
        await call(breaker, "ok")  # the stage's retry of its item in hand is the probe
        return await paused, breaker.state

    assert run_virtual(main()) == (2.0, "closed")


def test_a_probe_that_never_answered_lets_the_next_caller_probe() -> None:
    async def main() -> tuple[bool, str]:
        breaker = CircuitBreaker(failure_threshold=1, cooldown_s=1.0)
        await fail(breaker, 1)
        with pytest.raises(TimeoutError):
            async with breaker.admit():
                raise TimeoutError  # the client raised before recording
        return await call(breaker, "ok"), breaker.state

    assert run_virtual(main()) == (True, "closed")


def test_late_answers_while_open_change_nothing() -> None:
    async def main() -> str:
        breaker = CircuitBreaker(failure_threshold=2, cooldown_s=10.0)
        async with breaker.admit() as late_ok, breaker.admit() as late_fail:
            await fail(breaker, 2)
            late_ok.record("ok")
            late_fail.record("retriable")
        return breaker.state

    assert run_virtual(main()) == "open"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker(cooldown_s=10.0, max_cooldown_s=1.0)

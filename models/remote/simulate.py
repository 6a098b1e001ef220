"""A simulated provider and two drivers, run in virtual time: the flow-control benchmark in miniature.

The issue's benchmark compares mediavec's adaptive flow control with the seed's fixed semaphores at
the same quota. The real comparison runs over HTTP against the stand-in provider (``loadtest/``);
this module is the same experiment as pure asyncio, so it runs in a unit test in well under a second
and shows the mechanism without a network:

- ``SimulatedProvider``: a token-bucket quota on requests (429 with ``Retry-After`` and
  ``x-ratelimit-*`` headers), ``workers`` calls served at once with more queueing behind them (their
  latency grows), beyond ``capacity`` in flight a 503, optional injected 5xx and a latency tail.
- ``run_adaptive`` drives it through ``CircuitBreaker`` + ``AdaptiveLimiter`` + ``Quota``;
  ``run_fixed`` through one fixed semaphore (the seed's 5 API calls). Both retry retriable
  answers with the same full-jitter backoff, so only the concurrency control differs.
- ``run_virtual(coro)`` runs a coroutine on ``VirtualTimeLoop``, an event loop whose clock jumps to
  the next timer instead of sleeping: minutes of simulated traffic take milliseconds.
"""

from __future__ import annotations

import asyncio
import math
import random
import selectors
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from models.remote.breaker import CircuitBreaker
from models.remote.hints import parse_rate_headers
from models.remote.limiter import AdaptiveLimiter
from models.remote.quota import Quota
from models.remote.retry import Outcome, classify
from streams.errors import backoff_s

T = TypeVar("T")
_STUCK_S = 5.0  # real seconds to wait for a thread's wake-up before calling the simulation stuck


class _JumpingSelector(selectors.SelectSelector):
    """Never blocks on a timeout: advances the virtual clock by it and polls the real sockets."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:  # no timer at all: only another thread (the self-pipe) can wake us
            events = super().select(_STUCK_S)
            if not events:
                raise RuntimeError("virtual-time simulation is stuck: no timer, no ready task")
            return events
        self.now += max(0.0, timeout)
        return super().select(0)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time (starts at 0): ``sleep``, timeouts and ``call_later`` are instant."""

    def __init__(self) -> None:
        self._jumping = _JumpingSelector()
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.now


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a fresh ``VirtualTimeLoop``."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)


@dataclass
class ProviderSpec:
    """The simulated provider's limits and speed."""

    requests_per_s: float  # token-bucket refill rate: the quota
    burst: float  # bucket size
    workers: int = 64  # calls served at once; the rest queue
    capacity: int = 256  # calls in flight (served + queued) beyond which it answers 503
    latency_s: float = 0.25  # median service time
    tail_p: float = 0.0  # share of calls that take tail_factor times longer
    tail_factor: float = 10.0
    error_p: float = 0.0  # share of calls answered 500
    reject_s: float = 0.005  # time to answer a 429 or 503
    headers: bool = True  # send x-ratelimit-* headers (Retry-After is always sent on 429)


@dataclass
class ProviderStats:
    requests: int = 0
    ok: int = 0
    rate_limited: int = 0
    overloaded: int = 0
    errors: int = 0
    accepted_at: list[float] = field(default_factory=list)


class SimulatedProvider:
    """A provider in virtual time; ``await call()`` returns ``(status, headers)``."""

    def __init__(self, spec: ProviderSpec, rng: random.Random) -> None:
        self.spec, self._rng = spec, rng
        self.stats = ProviderStats()
        self._level = spec.burst
        self._at = 0.0
        self._in_flight = 0
        self._workers = asyncio.Semaphore(spec.workers)

    async def call(self) -> tuple[int, dict[str, str]]:
        spec, now = self.spec, asyncio.get_running_loop().time()
        self.stats.requests += 1
        self._level = min(spec.burst, self._level + (now - self._at) * spec.requests_per_s)
        self._at = now
        if self._level < 1:
            self.stats.rate_limited += 1
            await asyncio.sleep(spec.reject_s)
            retry_after = math.ceil((1 - self._level) / spec.requests_per_s)
            return 429, {"Retry-After": str(retry_after), **self._headers()}
        if self._in_flight >= spec.capacity:
            self.stats.overloaded += 1
            await asyncio.sleep(spec.reject_s)
            return 503, {"Retry-After": "1"}
        self._level -= 1
        self.stats.accepted_at.append(now)
        headers = self._headers()
        self._in_flight += 1
        try:
            async with self._workers:
                await asyncio.sleep(self._service_s())
        finally:
            self._in_flight -= 1
        if self._rng.random() < spec.error_p:
            self.stats.errors += 1
            return 500, {}
        self.stats.ok += 1
        return 200, headers

    def _service_s(self) -> float:
        base = self.spec.latency_s * self._rng.uniform(0.8, 1.2)
        return base * self.spec.tail_factor if self._rng.random() < self.spec.tail_p else base

    def _headers(self) -> dict[str, str]:
        if not self.spec.headers:
            return {}
        full_in = (self.spec.burst - self._level) / self.spec.requests_per_s
        return {
            "x-ratelimit-limit-requests": str(int(self.spec.burst)),
            "x-ratelimit-remaining-requests": str(max(0, int(self._level))),
            "x-ratelimit-reset-requests": f"{full_in * 1000:.0f}ms",
        }


@dataclass(frozen=True)
class SimResult:
    """What one driven run achieved, in the benchmark's terms."""

    items: int
    succeeded: int
    duration_s: float
    requests: int
    rate_limited: int
    overloaded: int
    quota_per_s: float

    @property
    def throughput(self) -> float:
        return self.succeeded / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def quota_fraction(self) -> float:
        """Items per second as a fraction of the provider's quota (the issue's goal: >= 0.9)."""
        return self.throughput / self.quota_per_s

    @property
    def rate_limited_per_1000(self) -> float:
        return 1000.0 * self.rate_limited / max(1, self.requests)

    @property
    def success_rate(self) -> float:
        return self.succeeded / max(1, self.items)


Attempt = Callable[[], Awaitable[Outcome]]


async def _drive(provider: SimulatedProvider, items: int, workers: int, attempt: Attempt, seed: int) -> SimResult:
    """``items`` items through ``workers`` tasks, each retried up to 8 times with full-jitter backoff."""
    loop, rng = asyncio.get_running_loop(), random.Random(seed)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for item in range(items):
        queue.put_nowait(item)
    succeeded = 0

    async def worker() -> None:
        nonlocal succeeded
        while not queue.empty():
            queue.get_nowait()
            for tries in range(1, 9):
                outcome = await attempt()
                if outcome == "ok":
                    succeeded += 1
                if outcome in ("ok", "permanent"):
                    break
                await asyncio.sleep(backoff_s(tries, 0.05, 2.0, rng))

    start = loop.time()
    await asyncio.gather(*(worker() for _ in range(workers)))
    stats = provider.stats
    return SimResult(
        items, succeeded, loop.time() - start, stats.requests, stats.rate_limited, stats.overloaded,
        provider.spec.requests_per_s,
    )  # fmt: skip


async def run_adaptive(
    provider: SimulatedProvider,
    items: int,
    *,
    limiter: AdaptiveLimiter | None = None,
    quota: Quota | None = None,
    breaker: CircuitBreaker | None = None,
    seed: int = 0,
) -> SimResult:
    """Drive ``provider`` the way mediavec's remote client does: breaker, limiter, quota, hints."""
    limiter = limiter or AdaptiveLimiter()
    breaker = breaker or CircuitBreaker()
    quota = quota or Quota()

    async def attempt() -> Outcome:
        async with breaker.admit() as ticket, limiter.slot() as slot:
            await quota.acquire()
            slot.sent()
            status, headers = await provider.call()
            outcome = classify(status)
            ticket.record(outcome)
            slot.report(outcome, hint=parse_rate_headers(headers, now=0.0), status=status)
            return outcome

    return await _drive(provider, items, limiter.max_limit, attempt, seed)


async def run_fixed(provider: SimulatedProvider, items: int, *, concurrency: int = 5, seed: int = 0) -> SimResult:
    """Drive ``provider`` the seed's way: a fixed semaphore, no hints, same retries."""
    gate = asyncio.Semaphore(concurrency)

    async def attempt() -> Outcome:
        async with gate:
            status, _ = await provider.call()
            return classify(status)

    return await _drive(provider, items, concurrency, attempt, seed)

"""An adaptive concurrency limit for calls to one remote provider (AIMD with a latency guard).

The issue's seed fixed its API concurrency at 5: too many for a small quota (a storm of 429s), too
few for a large one (the quota half used). A provider's capacity is not known in advance and moves
with its load, so the limit is learnt from the answers:

- it starts low (``initial_limit``, 2) and grows additively, about +1 per round trip (``1/limit`` per
  successful call), but only while the limit is in use (a call that found fewer than half the
  slots busy says nothing about a larger limit) and while latency holds: the fastest of the last
  ``recent`` successful calls stays under ``latency_tolerance`` times the baseline (the fastest of
  the last ``window`` successful calls), as the min-RTT filters of TCP Vegas and BBR compare.
  Queueing at the provider delays every call, the fastest too; a hosted API's heavy latency tail
  does not (against the window's minimum, the recent median of a lognormal latency with p99 four
  times its median already looked like queueing: 0.3 of the quota in ``loadtest.bench_remote``).
  Rising latency means calls queue at the provider: the limit is cut by ``latency_backoff``.
- a 429, a 408/503/504, a timeout or a broken connection cuts it by ``backoff`` (a 500 or 502 is a
  fault, not load: it is retried and counted by the breaker, and leaves the limit alone). A cut counts
  once per round trip: only a call sent after the last cut may cut again, since the calls already in
  flight answer for the old limit (the way TCP reacts once per window).
- a ``permanent`` answer is the item's own fault and leaves the limit alone.
- the limit stays within [``min_limit``, ``max_limit``] (``min_limit`` >= 1).

Server hints (``RateHint``: ``Retry-After``, an ``x-ratelimit-remaining-*`` at 0 with its reset)
pause NEW slots until that time; calls already in flight go on. Where the headers give the request
budget's limit and reset too, the budget is mirrored (``budget.RequestBudget``) and new slots are
paced to its refill instead of waiting for it to be whole. A wait is capped at ``max_pause_s``.

Use::

    async with limiter.slot() as slot:
        await quota.acquire(tokens=n)      # the quota's wait is not the provider's latency
        slot.sent()
        response = await post(...)
        slot.report(classify(response.status), hint=parse_rate_headers(response.headers))

A slot left without a report (an exception, a cancel) frees its place and changes nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import statistics
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

from models.remote.budget import RequestBudget
from models.remote.hints import RateHint
from models.remote.retry import Outcome

logger = logging.getLogger(__name__)

_EPSILON_S = 1e-9
OVERLOAD_STATUSES = frozenset({408, 503, 504})  # a retriable status that says "too much", not "broken"

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def loop_clock() -> float:
    """The running event loop's clock: the same time ``asyncio.sleep`` counts in (virtual in tests)."""
    return asyncio.get_running_loop().time()


class _WindowMin:
    """Minimum of the last ``size`` samples in O(1) amortised (a monotonic deque)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._seq = 0
        self._items: deque[tuple[int, float]] = deque()

    def add(self, value: float) -> None:
        self._seq += 1
        while self._items and self._items[-1][1] >= value:
            self._items.pop()
        self._items.append((self._seq, value))
        if self._items[0][0] <= self._seq - self._size:
            self._items.popleft()

    @property
    def value(self) -> float | None:
        return self._items[0][1] if self._items else None


class Slot:
    """One admitted call. ``sent()`` marks when the request left; ``report()`` says how it went."""

    def __init__(self, limiter: AdaptiveLimiter, busy_at_entry: int, seq: int) -> None:
        self._limiter = limiter
        self._busy_at_entry = busy_at_entry
        self.seq = seq
        self.sent_at = limiter.now()
        self.reported = False

    def sent(self) -> None:
        """Mark the moment the request goes out (after any quota wait): latency counts from here."""
        self.sent_at = self._limiter.now()

    def report(
        self,
        outcome: Outcome,
        hint: RateHint | None = None,
        latency_s: float | None = None,
        status: int | None = None,
    ) -> None:
        """Feed the call's outcome (``classify``), the response's hint and its latency to the limiter.

        ``status`` is the HTTP status when a response came: a ``retriable`` 500 or 502 is a fault,
        not a sign of load, and leaves the limit alone (the breaker counts it); a 408, 503 or 504,
        or a retriable failure without a response (a timeout, a reset), cuts it.

        ``latency_s`` defaults to the time since ``sent()`` (or since the slot was granted). When
        requests differ much in size (batches of 1 and of 32 images), pass the latency per item so
        a small batch does not set a baseline that a full one cannot meet. Only the first report of
        a slot counts.
        """
        if self.reported:
            return
        self.reported = True
        latency = self._limiter.now() - self.sent_at if latency_s is None else latency_s
        overload = outcome == "rate_limited" or (
            outcome == "retriable" and (status is None or status in OVERLOAD_STATUSES)
        )
        self._limiter._on_report(self, outcome, overload, max(0.0, latency), hint)


class AdaptiveLimiter:
    """An async concurrency limit that learns the provider's capacity (see the module docstring)."""

    def __init__(
        self,
        *,
        initial_limit: int = 2,
        min_limit: int = 1,
        max_limit: int = 64,
        backoff: float = 0.7,
        latency_backoff: float = 0.9,
        latency_tolerance: float = 2.0,
        window: int = 200,
        recent: int = 20,
        warmup: int = 10,
        max_pause_s: float = 60.0,
        clock: Clock = loop_clock,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not 1 <= min_limit <= max_limit:
            raise ValueError(f"need 1 <= min_limit <= max_limit, got {min_limit} and {max_limit}")
        if not (0 < backoff < 1 and 0 < latency_backoff < 1 and latency_tolerance > 1):
            raise ValueError("backoff factors must lie in (0, 1) and latency_tolerance above 1")
        self.min_limit, self.max_limit = min_limit, max_limit
        self.backoff, self.latency_backoff, self.latency_tolerance = backoff, latency_backoff, latency_tolerance
        self.warmup, self.max_pause_s = warmup, max_pause_s
        self.now, self._sleep = clock, sleep
        self._limit = float(min(max(initial_limit, min_limit), max_limit))
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._paused_until = float("-inf")
        self._budget = RequestBudget()
        self._held_back = 0  # slots granted but waiting out a pause or the budget: not calls yet
        self._last_cut_at = float("-inf")
        self._baseline = _WindowMin(window)
        self._recent: deque[float] = deque(maxlen=recent)
        self._samples = 0

    # -- metrics -------------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        """The current concurrency limit (a gauge)."""
        return int(self._limit)

    @property
    def in_flight(self) -> int:
        """Slots held now: calls in flight plus those waiting out a pause or the quota."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Callers queued for a slot."""
        return len(self._waiters)

    @property
    def paused_s(self) -> float:
        """Seconds until new slots may start again (0 when not paused)."""
        return max(0.0, self._paused_until - self.now())

    @property
    def latency_s(self) -> float | None:
        """Median latency of the last ``recent`` successful calls, ``None`` before the first one."""
        return statistics.median(self._recent) if self._recent else None

    @property
    def baseline_s(self) -> float | None:
        """Lowest latency among the last ``window`` successful calls."""
        return self._baseline.value

    # -- use -----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """Wait for a free place under the limit and for any pause to end, then hold it."""
        await self._acquire()
        try:
            self._held_back += 1
            try:
                await self._wait_clear()
            finally:
                self._held_back -= 1
            yield Slot(self, self._in_flight - self._held_back, self._budget.spend(self.now()))
        finally:
            self._in_flight -= 1
            self._wake()

    def apply_hint(self, hint: RateHint, since: float | None = None) -> None:
        """Pause new slots as long as ``hint`` asks, counted from ``since`` (default: now).

        A slot counts from when its request went out: the provider measured its budget when the
        request arrived, not when its answer reached us, so waiting from our receipt would leave the
        budget full and unused for a round trip.
        """
        if hint.remaining_requests == 0 and hint.limit_requests and hint.reset_requests_s:
            hint = dataclasses.replace(hint, remaining_requests=None)  # the budget mirror paces this
        pause = min(hint.pause_s, self.max_pause_s)
        if pause > 0:
            until = (self.now() if since is None else since) + pause
            if until > self._paused_until:
                logger.info("provider asks to wait %.3f s; new calls paused", pause)
                self._paused_until = until

    async def _acquire(self) -> None:
        if self._in_flight < self.limit and not self._waiters:
            self._in_flight += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # _wake hands the place over: it counts us in _in_flight before waking us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._in_flight -= 1  # handed over as we were cancelled: pass it on
                self._wake()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    async def _wait_clear(self) -> None:
        """Wait out a pause, and until the mirrored request budget holds one more call."""
        while True:
            now = self.now()
            wait = max(self._paused_until - now, min(self._budget.wait_s(now), self.max_pause_s))
            if wait <= _EPSILON_S:  # a shorter wait is float rounding and would not move the clock
                return
            await self._sleep(wait)

    def _wake(self) -> None:
        while self._waiters and self._in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_flight += 1
                waiter.set_result(None)

    # -- learning ------------------------------------------------------------------------------

    def _on_report(self, slot: Slot, outcome: Outcome, overload: bool, latency: float, hint: RateHint | None) -> None:
        if hint is not None:
            self.apply_hint(hint, since=slot.sent_at)
            self._budget.observe(hint, slot.seq, slot.sent_at)
        if outcome == "ok":
            self._observe(latency)
            if self._latency_rising():
                self._cut(slot, self.latency_backoff, "latency")
            elif slot._busy_at_entry * 2 >= self._limit and slot.sent_at > self._last_cut_at:
                self._limit = min(float(self.max_limit), self._limit + 1.0 / self._limit)
        elif overload:
            self._cut(slot, self.backoff, outcome)
        self._wake()

    def _observe(self, latency: float) -> None:
        self._baseline.add(latency)
        self._samples += 1
        self._recent.append(latency)

    def _latency_rising(self) -> bool:
        baseline = self._baseline.value
        if self._samples < self.warmup or baseline is None or not self._recent:
            return False
        return min(self._recent) > self.latency_tolerance * max(baseline, 1e-6)

    def _cut(self, slot: Slot, factor: float, why: str) -> None:
        if slot.sent_at <= self._last_cut_at:
            return  # sent under the old limit: that limit was cut already
        before = self._limit
        self._limit = max(float(self.min_limit), self._limit * factor)
        self._last_cut_at = self.now()
        if int(before) != int(self._limit):
            logger.info("concurrency limit %d -> %d (%s)", int(before), int(self._limit), why)

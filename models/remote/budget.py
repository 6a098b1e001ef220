"""The provider's request budget as its headers last described it, minus what we sent since.

Waiting only when a header says ``remaining: 0`` reacts a round trip late: by the time that answer
arrives, the calls sent meanwhile have met an empty budget and come back 429. The headers say
enough to act before: ``x-ratelimit-remaining-requests`` is the budget when the provider received
that request, and with ``x-ratelimit-limit-requests`` and ``x-ratelimit-reset-requests`` (the time
until the budget is whole again) they give its refill rate, ``(limit - remaining) / reset``. So the
budget now is about ``remaining + rate * (now - sent) - (calls we sent after that one)``, and a new
call waits while that is below one.

The same estimate serves a fixed-window provider (reset = end of the window): the rate is then
what spreads the remaining calls evenly to the window's end. Without a remaining count nothing is
mirrored and nothing waits; a wait is capped by the limiter's ``max_pause_s``.
"""

from __future__ import annotations

from collections import deque

from models.remote.hints import RateHint

_EPSILON = 1e-9


class RequestBudget:
    """Mirror of the provider's request budget: a token bucket reset by each hint, spent by our sends.

    Each send is numbered (``spend``) and remembered with its time until a hint about a later call
    arrives, so that a hint (which saw only the calls before its own) is brought up to date by
    replaying the sends made after it, refill included. Waiting therefore always lets the budget
    refill: it cannot stall for want of a new hint.
    """

    def __init__(self, history: int = 4096) -> None:
        self._sent = 0
        self._sends: deque[tuple[int, float]] = deque(maxlen=history)
        self._seen_seq = 0
        self._level: float | None = None
        self._at = float("-inf")
        self._rate: float | None = None
        self._limit = float("inf")

    def spend(self, now: float) -> int:
        """Count one call going out at ``now``; its number ties its answer's hint to the calls before it."""
        self._sent += 1
        self._sends.append((self._sent, now))
        self._take(now)
        return self._sent

    def observe(self, hint: RateHint, seq: int, sent_at: float) -> None:
        """Take in the hint that answered call ``seq`` (sent at ``sent_at``), unless a newer one is known."""
        remaining, limit, reset = hint.remaining_requests, hint.limit_requests, hint.reset_requests_s
        if remaining is None or seq < self._seen_seq:
            return
        if limit is not None and limit > 0:
            self._limit = float(limit)
        if limit is not None and reset is not None and reset > 0 and limit > remaining:
            self._rate = (limit - remaining) / reset
        self._level, self._at, self._seen_seq = float(remaining), sent_at, seq
        while self._sends and self._sends[0][0] <= seq:
            self._sends.popleft()
        for _, when in self._sends:  # sent after that call: the provider has counted them since
            self._take(when)

    def wait_s(self, now: float) -> float:
        """Seconds until the mirrored budget holds one more call (0 when it does, or is unknown)."""
        if self._level is None:
            return 0.0
        level = self._refilled(now)
        if level >= 1.0 - _EPSILON or not self._rate:  # no rate known: the 429s and Retry-After will tell
            return 0.0
        return (1.0 - level) / self._rate

    def _refilled(self, now: float) -> float:
        assert self._level is not None
        return min(self._limit, self._level + (self._rate or 0.0) * max(0.0, now - self._at))

    def _take(self, now: float) -> None:
        if self._level is not None:
            self._level = self._refilled(now) - 1.0
            self._at = max(self._at, now)

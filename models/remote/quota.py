"""A hard ceiling on what is sent to a provider: requests per second and tokens per minute.

The adaptive limiter learns what the provider tolerates; the quota is what the user pays for or
was granted, and it is never exceeded whatever the limiter thinks. Each limit is a token bucket
that refills continuously at its rate and holds at most its burst:

- ``requests_per_s`` with ``request_burst`` (default: one second's worth, at least 1);
- ``tokens_per_min`` with ``token_burst`` (default: one minute's worth), the way OpenAI-style
  providers count (their reset header is the time until the bucket is whole again).

So over any interval of T seconds at most ``burst + rate * T`` is sent, for either limit. A limit
left ``None`` is not enforced. ``await quota.acquire(tokens=n)`` waits until both buckets hold enough,
takes from both, and serves callers in arrival order (a large request is not starved by small ones).
A request needing more tokens than the burst can never be sent: it raises ``QuotaExceeded`` at once,
which the caller turns into that item's dead letter.

Tokens are the caller's estimate before the call: ``estimate_text_tokens`` for text; for an image the
provider's own rule (a fixed cost per image or per tile) is the client's to apply.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass

from models.remote.limiter import Clock, Sleep, loop_clock

logger = logging.getLogger(__name__)

_EPSILON_S = 1e-9  # a shorter wait is float rounding: sleeping it could make no progress on the clock


class QuotaExceeded(ValueError):
    """One request asks for more than a bucket can ever hold (it would wait forever)."""


def estimate_text_tokens(text: str) -> int:
    """Tokens a text will cost, estimated as ``ceil(len(text) / 4)``.

    Four characters per token is OpenAI's rule of thumb for English with BPE tokenizers; it is an
    estimate for budgeting only (the provider's own count may differ, and other scripts take more
    tokens per character), so set ``tokens_per_min`` with some margin below the real quota.
    """
    return math.ceil(len(text) / 4)


@dataclass
class _Bucket:
    rate: float  # units per second
    burst: float
    level: float
    at: float

    def refill(self, now: float) -> None:
        self.level = min(self.burst, self.level + (now - self.at) * self.rate)
        self.at = max(self.at, now)

    def wait_for(self, amount: float) -> float:
        return max(0.0, (amount - self.level) / self.rate)


class Quota:
    """Token buckets for requests/s and tokens/min; ``await acquire(tokens=n)`` before each request."""

    def __init__(
        self,
        *,
        requests_per_s: float | None = None,
        tokens_per_min: float | None = None,
        request_burst: float | None = None,
        token_burst: float | None = None,
        clock: Clock = loop_clock,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        for name, value in (("requests_per_s", requests_per_s), ("tokens_per_min", tokens_per_min)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        self.requests_per_s, self.tokens_per_min = requests_per_s, tokens_per_min
        self._request_burst = max(1.0, request_burst or requests_per_s or 1.0)
        self._token_burst = max(1.0, token_burst or tokens_per_min or 1.0)
        self._clock, self._sleep = clock, sleep
        self._requests: _Bucket | None = None
        self._tokens: _Bucket | None = None
        self._lock: asyncio.Lock | None = None
        self.requests_used = 0
        self.tokens_used = 0

    def _ensure(self) -> asyncio.Lock:
        """The buckets and the lock, made on first use so their clock starts in the running loop."""
        if self._lock is None:
            now = self._clock()
            if self.requests_per_s is not None:
                self._requests = _Bucket(self.requests_per_s, self._request_burst, self._request_burst, now)
            if self.tokens_per_min is not None:
                self._tokens = _Bucket(self.tokens_per_min / 60.0, self._token_burst, self._token_burst, now)
            self._lock = asyncio.Lock()
        return self._lock

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until one request of ``tokens`` tokens fits under both limits, then count it."""
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        if self.tokens_per_min is not None and tokens > self._token_burst:
            raise QuotaExceeded(f"a request of {tokens} tokens exceeds the token burst of {self._token_burst:g}")
        async with self._ensure():  # first come, first served: the head waits, the others queue behind it
            while (wait := self._wait(tokens)) > _EPSILON_S:
                await self._sleep(wait)
            if self._requests is not None:
                self._requests.level -= 1
            if self._tokens is not None:
                self._tokens.level -= tokens
        self.requests_used += 1
        self.tokens_used += tokens

    def _wait(self, tokens: int) -> float:
        now = self._clock()
        waits = [0.0]
        if self._requests is not None:
            self._requests.refill(now)
            waits.append(self._requests.wait_for(1))
        if self._tokens is not None:
            self._tokens.refill(now)
            waits.append(self._tokens.wait_for(tokens))
        return max(waits)

    def usage(self) -> dict[str, float]:
        """Fraction of each burst in use right now (0 = idle, 1 = exhausted), for ``mediavec status``."""
        self._ensure()
        now = self._clock()
        out: dict[str, float] = {}
        for name, bucket in (("requests", self._requests), ("tokens", self._tokens)):
            if bucket is not None:
                bucket.refill(now)
                out[name] = 1.0 - max(0.0, bucket.level) / bucket.burst
        return out

"""What a remote provider is doing, for Prometheus and for ``mediavec status``.

The Prometheus series are labelled by the provider's model id (``remote/nim/nvidia:nvclip``).
:class:`UsageWindow` keeps the requests and tokens of the last minute, so a snapshot can say how
much of the configured quota is in use as a rate (requests/s, tokens/min), not only how full the
token buckets are at this instant.
"""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import Counter, Gauge, Histogram

REQUEST_S = Histogram(
    "mediavec_provider_request_seconds",
    "Latency of one request to the embedding provider, send to last byte",
    ["provider"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
REQUESTS = Counter("mediavec_provider_requests_total", "Requests to the provider by outcome", ["provider", "outcome"])
THROTTLED = Counter("mediavec_provider_429_total", "Answers 429 (rate limited) from the provider", ["provider"])
TOKENS = Counter("mediavec_provider_tokens_total", "Tokens used (usage reported, else estimated)", ["provider"])
LIMIT = Gauge("mediavec_provider_concurrency_limit", "Current adaptive concurrency limit", ["provider"])
IN_FLIGHT = Gauge("mediavec_provider_in_flight", "Requests to the provider in flight", ["provider"])
CIRCUIT_OPEN = Gauge("mediavec_provider_circuit_open", "1 while the circuit breaker keeps calls away", ["provider"])
REFUSED = Counter("mediavec_provider_refused_items_total", "Inputs the provider refused for good", ["provider"])

WINDOW_S = 60.0


class UsageWindow:
    """Requests and tokens sent in the last :data:`WINDOW_S` seconds."""

    def __init__(self) -> None:
        self._sent: deque[tuple[float, int]] = deque()
        self.throttled = 0
        self.requests = 0
        self.tokens = 0

    def add(self, tokens: int, *, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._sent.append((now, tokens))
        self.requests += 1
        self.tokens += tokens
        self._trim(now)

    def rates(self, *, now: float | None = None) -> tuple[float, float]:
        """(requests per second, tokens per minute) over the window, or over what has run of it."""
        now = time.monotonic() if now is None else now
        self._trim(now)
        if not self._sent:
            return 0.0, 0.0
        span = max(1.0, min(WINDOW_S, now - self._sent[0][0]))
        count, tokens = len(self._sent), sum(t for _, t in self._sent)
        return count / span, tokens * 60.0 / span

    def _trim(self, now: float) -> None:
        while self._sent and self._sent[0][0] < now - WINDOW_S:
            self._sent.popleft()

"""Read a provider's rate-limit headers into one ``RateHint``, never raising on what a server sends.

The issue's seed ignored these headers and learnt its limit from failures only. Providers say more:

- ``Retry-After`` (RFC 9110): delay-seconds or an HTTP date, on a 429 or 503.
- OpenAI style: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, the resets written as Go
  durations (``"1s"``, ``"6m0s"``, ``"20ms"``, ``"1m30.5s"``) or plain seconds. The reset is the time
  until that budget is whole again.
- Single-budget variants (NVIDIA's gateway and others): ``x-ratelimit-remaining`` /
  ``x-ratelimit-reset`` / ``x-ratelimit-limit``, and the IETF draft's ``ratelimit-*``; read as the
  request budget. A plain reset above ``EPOCH_THRESHOLD_S`` is a Unix time (GitHub style) and is
  turned into a delay.

A stranger's server can send anything: a value that does not parse, is negative, NaN or infinite
is dropped (that field is ``None``), and every delay is clamped to ``MAX_HINT_S`` so a header saying
"retry in ten years" cannot stall a stage for longer than an hour.
"""

from __future__ import annotations

import datetime
import email.utils
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

logger = logging.getLogger(__name__)

MAX_HINT_S = 3600.0
EPOCH_THRESHOLD_S = 1e9  # ~31 years: no reset delay is that long, a Unix time (2001 onwards) is longer
_MAX_VALUE_CHARS = 64
_MAX_COUNT = 2**53
_REMAINING_REQUESTS = ("x-ratelimit-remaining-requests", "x-ratelimit-remaining", "ratelimit-remaining")
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class RateHint:
    """What one response said about the provider's limits; ``None`` where it said nothing (usable)."""

    retry_after_s: float | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None
    limit_requests: int | None = None
    limit_tokens: int | None = None

    @property
    def pause_s(self) -> float:
        """How long new calls should wait: ``Retry-After``, or the reset of a budget that reached 0."""
        waits = [self.retry_after_s or 0.0]
        if self.remaining_requests == 0 and self.reset_requests_s is not None:
            waits.append(self.reset_requests_s)
        if self.remaining_tokens == 0 and self.reset_tokens_s is not None:
            waits.append(self.reset_tokens_s)
        return max(waits)


def parse_rate_headers(headers: Mapping[str, object], now: float | None = None) -> RateHint:
    """The ``RateHint`` in ``headers`` (any mapping; names are matched case-insensitively).

    ``now`` is the wall-clock time (``time.time()`` by default) used to turn an HTTP date or a Unix
    time into a delay; injected by tests.
    """
    wall = time.time() if now is None else now
    found: dict[str, str] = {}
    for name, value in headers.items():
        text = _text(value)
        if isinstance(name, str) and text is not None:
            found.setdefault(name.strip().lower(), text)

    def first(*names: str) -> str | None:
        return next((found[n] for n in names if n in found), None)

    return RateHint(
        retry_after_s=_retry_after(first("retry-after"), wall),
        remaining_requests=_count(
            first("x-ratelimit-remaining-requests", "x-ratelimit-remaining", "ratelimit-remaining")
        ),
        remaining_tokens=_count(first("x-ratelimit-remaining-tokens")),
        reset_requests_s=_reset(first("x-ratelimit-reset-requests", "x-ratelimit-reset", "ratelimit-reset"), wall),
        reset_tokens_s=_reset(first("x-ratelimit-reset-tokens"), wall),
        limit_requests=_count(first("x-ratelimit-limit-requests", "x-ratelimit-limit", "ratelimit-limit")),
        limit_tokens=_count(first("x-ratelimit-limit-tokens")),
    )


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration (``"6m0s"``, ``"20ms"``) or a plain number; ``None`` if neither."""
    text = text.strip()
    if not text or len(text) > _MAX_VALUE_CHARS:
        return None
    number = _number(text)
    if number is not None:
        return number
    parts = list(_GO_PART.finditer(text))
    if not parts or "".join(p.group(0) for p in parts) != text:
        return None
    total = sum(float(p.group(1)) * _GO_UNITS[p.group(2)] for p in parts)
    return total if math.isfinite(total) else None


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str) or len(value) > _MAX_VALUE_CHARS:
        return None
    return value.strip()


def _number(text: str) -> float | None:
    """A finite, non-negative decimal number; ``None`` for anything else (``"nan"``, ``"-1"``, ``"1e999"``)."""
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value


def _count(text: str | None) -> int | None:
    value = None if text is None else _number(text)
    return None if value is None else int(min(value, _MAX_COUNT))


def _clamp(seconds: float) -> float:
    return min(max(seconds, 0.0), MAX_HINT_S)


def _reset(text: str | None, wall: float) -> float | None:
    seconds = None if text is None else parse_duration(text)
    if seconds is None:
        return None
    return _clamp(seconds - wall if seconds > EPOCH_THRESHOLD_S else seconds)


def _retry_after(text: str | None, wall: float) -> float | None:
    if text is None:
        return None
    seconds = _number(text)
    if seconds is not None:
        return _clamp(seconds)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" or a sloppy server: RFC 9110 dates are GMT anyway
        when = when.replace(tzinfo=datetime.UTC)
    return _clamp(when.timestamp() - wall)

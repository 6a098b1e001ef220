"""The outcome of a provider's answer, and the backoff before a retry (no network needed)."""

from __future__ import annotations

import random

import pytest

from models.remote.retry import classify
from streams.errors import backoff_s


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, "ok"),
        (204, "ok"),
        (429, "rate_limited"),
        *[(s, "retriable") for s in (408, 425, 500, 502, 503, 504, 520, 529)],
        *[(s, "permanent") for s in (400, 401, 403, 404, 413, 422, 501, 505, 301, 101)],
    ],
)
def test_status_outcomes(status: int, expected: str) -> None:
    assert classify(status) == expected


def test_a_status_wins_over_the_exception_that_came_with_it() -> None:
    assert classify(503, ValueError("body did not parse")) == "retriable"
    assert classify(400, TimeoutError()) == "permanent"


@pytest.mark.parametrize(
    "exc",
    [TimeoutError(), ConnectionResetError(), ConnectionRefusedError(), OSError("socket")],
)
def test_transport_faults_are_retriable(exc: BaseException) -> None:
    assert classify(None, exc) == "retriable"


def test_aiohttp_transport_errors_are_retriable_without_importing_aiohttp() -> None:
    import aiohttp  # a test may use it: the layer under test must not

    for exc in (aiohttp.ServerDisconnectedError(), aiohttp.ClientPayloadError("cut"), aiohttp.ServerTimeoutError()):
        assert classify(None, exc) == "retriable"
    assert classify(None, aiohttp.InvalidURL("no scheme")) == "permanent"  # a client error, not a transport fault


def test_other_errors_and_no_answer_are_permanent() -> None:
    assert classify(None, ValueError("bad json")) == "permanent"
    assert classify(None, None) == "permanent"


def test_retry_delay_is_full_jitter_under_a_growing_capped_ceiling() -> None:
    rng = random.Random(7)
    for attempt in range(1, 15):
        ceiling = min(5.0, 0.1 * 2 ** (attempt - 1))
        delays = [backoff_s(attempt, 0.1, 5.0, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.5 * ceiling  # it reaches up to the ceiling: not stuck at the base
        assert len(set(delays)) > 100  # jittered, not a fixed wait


def test_retry_delay_survives_absurd_attempts() -> None:
    rng = random.Random(1)
    assert 0.0 <= backoff_s(10_000, 0.5, 30.0, rng) <= 30.0
    assert 0.0 <= backoff_s(0, 0.5, 30.0, rng) <= 0.5

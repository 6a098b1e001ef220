"""The mirror of the provider's request budget, from its x-ratelimit headers."""

from __future__ import annotations

import pytest

from models.remote.budget import RequestBudget
from models.remote.hints import RateHint


def hint(remaining: int, limit: int | None = 10, reset_s: float | None = 2.0) -> RateHint:
    return RateHint(remaining_requests=remaining, limit_requests=limit, reset_requests_s=reset_s)


def test_unknown_budget_never_waits() -> None:
    budget = RequestBudget()
    for _ in range(100):
        budget.spend(now=0.0)
    assert budget.wait_s(now=0.0) == 0.0


def test_calls_sent_after_the_hint_are_taken_from_it() -> None:
    budget = RequestBudget()
    first = budget.spend(now=0.0)
    budget.spend(now=0.0)
    budget.observe(hint(remaining=3, reset_s=1.4), first, sent_at=0.0)  # refills (10-3)/1.4 = 5 per second
    assert budget.wait_s(now=0.0) == 0.0  # 3 left, 1 of them taken by the call sent after `first`
    budget.spend(now=0.0)
    budget.spend(now=0.0)
    assert budget.wait_s(now=0.0) == pytest.approx(0.2)  # one more call after one refill: 1/5 s
    assert budget.wait_s(now=0.2) == pytest.approx(0.0)


def test_refill_stops_at_the_limit() -> None:
    budget = RequestBudget()
    budget.observe(hint(remaining=0, reset_s=1.0), budget.spend(now=0.0), sent_at=0.0)
    for _ in range(10):
        budget.spend(now=100.0)
    assert budget.wait_s(now=100.0) == pytest.approx(0.1)  # a long idle refills 10, not 1,000


def test_sends_beyond_the_whole_budget_still_refill_regression_stalled_forever() -> None:
    # found by the limiter's fuzz test: with sends counted against a capped level, a mirror that had
    # seen more calls than the limit since its last hint asked every caller to wait, forever
    budget = RequestBudget()
    budget.observe(hint(remaining=0, limit=1, reset_s=1.0), budget.spend(now=0.0), sent_at=0.0)
    for _ in range(5):
        budget.spend(now=0.0)
    assert budget.wait_s(now=0.0) == pytest.approx(6.0)  # level -5: six refills of 1/s to reach 1
    assert budget.wait_s(now=6.0) == 0.0


def test_an_older_hint_does_not_overwrite_a_newer_one() -> None:
    budget = RequestBudget()
    older, newer = budget.spend(now=0.0), budget.spend(now=0.0)
    budget.observe(hint(remaining=5), newer, sent_at=0.0)
    budget.observe(hint(remaining=0), older, sent_at=0.0)  # answered late
    assert budget.wait_s(now=0.0) == 0.0


def test_without_limit_or_reset_nothing_is_paced() -> None:
    budget = RequestBudget()
    budget.observe(hint(remaining=0, limit=None, reset_s=None), budget.spend(now=0.0), sent_at=0.0)
    budget.spend(now=0.0)
    assert budget.wait_s(now=0.0) == 0.0  # the 429s and their Retry-After will tell

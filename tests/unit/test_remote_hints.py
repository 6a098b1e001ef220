"""Rate-limit headers from a provider: the formats in the wild, and garbage from a stranger's server."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.remote.hints import MAX_HINT_S, RateHint, parse_duration, parse_rate_headers

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
NAMES = [
    "Retry-After",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1m30.5s", 90.5), ("2h", 7200.0), ("1.5", 1.5), ("0", 0.0),
     (" 250ms ", 0.25), ("1h1m1s", 3661.0), ("500us", 0.0005), (".5s", 0.5)],
)  # fmt: skip
def test_durations_go_style_and_plain(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "1x", "-1s", "1s2", "abc", "nan", "inf", "-3", "1e999", "1 s", "ms1"])
def test_durations_that_are_not(text: str) -> None:
    assert parse_duration(text) is None


def test_openai_headers() -> None:
    hint = parse_rate_headers(
        {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-limit-tokens": "150000",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-remaining-tokens": "149984",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-reset-tokens": "6m0s",
        },
        now=NOW,
    )
    assert hint == RateHint(None, 0, 149984, 1.0, 360.0, 60, 150000)
    assert hint.pause_s == 1.0  # requests ran out; tokens did not, so their reset does not count


def test_single_budget_headers_names_any_case() -> None:
    hint = parse_rate_headers({"X-RateLimit-Remaining": "0", "X-RATELIMIT-RESET": "2.5", "X-RateLimit-Limit": "40"})
    assert (hint.remaining_requests, hint.reset_requests_s, hint.limit_requests) == (0, 2.5, 40)
    assert hint.pause_s == 2.5


def test_a_reset_given_as_unix_time_becomes_a_delay() -> None:
    hint = parse_rate_headers({"x-ratelimit-reset": str(int(NOW) + 30), "x-ratelimit-remaining": "0"}, now=NOW)
    assert hint.reset_requests_s == 30.0
    past = parse_rate_headers({"x-ratelimit-reset": str(int(NOW) - 30)}, now=NOW)
    assert past.reset_requests_s == 0.0


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_rate_headers({"Retry-After": "7"}).retry_after_s == 7.0
    date = parse_rate_headers({"Retry-After": "Tue, 14 Nov 2023 22:13:50 GMT"}, now=NOW)
    assert date.retry_after_s == 30.0
    assert date.pause_s == 30.0
    assert parse_rate_headers({"Retry-After": "Tue, 14 Nov 2023 22:13:00 GMT"}, now=NOW).retry_after_s == 0.0


def test_absurd_delays_are_clamped() -> None:
    hint = parse_rate_headers({"Retry-After": "999999999", "x-ratelimit-reset-tokens": "99999h"}, now=NOW)
    assert hint.retry_after_s == MAX_HINT_S
    assert hint.reset_tokens_s == MAX_HINT_S


def test_garbage_is_dropped_field_by_field() -> None:
    hint = parse_rate_headers(
        {"Retry-After": "soon", "x-ratelimit-remaining-requests": "-4", "x-ratelimit-reset-requests": "NaN",
         "x-ratelimit-limit-requests": "1" * 500, "x-ratelimit-remaining-tokens": "12"},
    )  # fmt: skip
    assert hint == RateHint(remaining_tokens=12)
    assert hint.pause_s == 0.0


def test_remaining_zero_without_a_reset_asks_no_pause() -> None:
    assert parse_rate_headers({"x-ratelimit-remaining-requests": "0"}).pause_s == 0.0


def test_non_text_values_and_names_are_ignored() -> None:
    weird: dict[object, object] = {b"Retry-After": "5", "Retry-After": b"3", "x-ratelimit-remaining": 5, 7: "1"}
    assert parse_rate_headers(weird) == RateHint(retry_after_s=3.0)  # type: ignore[arg-type]


def _sane(value: float | None) -> bool:
    return value is None or (math.isfinite(value) and 0.0 <= value <= MAX_HINT_S)


@given(
    st.dictionaries(
        st.one_of(st.sampled_from(NAMES), st.sampled_from([n.upper() for n in NAMES]), st.text(max_size=30)),
        st.one_of(
            st.text(max_size=80),
            st.from_regex(r"-?[0-9]{0,12}(\.[0-9]{0,6})?(e[+-]?[0-9]{1,4})?(h|m|s|ms|us|ns)?", fullmatch=True),
            st.floats(allow_nan=True, allow_infinity=True).map(str),
            st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT")),
        ),
        max_size=12,
    ),
    st.floats(min_value=0, max_value=4e9),
)
def test_any_headers_parse_without_raising_into_sane_hints(headers: dict[str, str], now: float) -> None:
    hint = parse_rate_headers(headers, now=now)
    delays = (hint.retry_after_s, hint.reset_requests_s, hint.reset_tokens_s)
    assert all(_sane(d) for d in delays)
    counts = (hint.remaining_requests, hint.remaining_tokens, hint.limit_requests, hint.limit_tokens)
    assert all(c is None or c >= 0 for c in counts)
    assert 0.0 <= hint.pause_s <= MAX_HINT_S


@given(st.lists(st.tuples(st.integers(0, 999), st.sampled_from(["h", "m", "s", "ms"])), min_size=1, max_size=4))
def test_go_durations_add_up(parts: list[tuple[int, str]]) -> None:
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    text = "".join(f"{n}{unit}" for n, unit in parts)
    assert parse_duration(text) == pytest.approx(sum(n * scale[unit] for n, unit in parts))

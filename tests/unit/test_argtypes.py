"""The CLI's number types (mediavec.argtypes): what they take, and one clear line for what they refuse."""

from __future__ import annotations

import argparse

import pytest

from mediavec.argtypes import non_negative_float, non_negative_int, port, positive_float, positive_int


def test_good_values() -> None:
    assert positive_int("4") == 4 and positive_float("0.25") == 0.25
    assert non_negative_float("0") == 0.0 and non_negative_int("0") == 0 and port("0") == 0 and port("65535") == 65535


@pytest.mark.parametrize(
    "kind, text, message",
    [
        (positive_int, "0", "must be at least 1: '0'"),
        (positive_int, "1.5", "not a whole number: '1.5'"),
        (non_negative_int, "-3", "must be at least 0: '-3'"),
        (positive_float, "0", "must be above 0: '0'"),
        (positive_float, "inf", "not a finite number: 'inf'"),
        (non_negative_float, "-0.1", "must be at least 0: '-0.1'"),
        (non_negative_float, "nan", "not a finite number: 'nan'"),
        (port, "65536", "not a TCP port (0 to 65535): '65536'"),
        (port, "-1", "not a TCP port (0 to 65535): '-1'"),
        (port, "http", "not a whole number: 'http'"),
    ],
)
def test_refusals_say_what_is_wrong(kind: object, text: str, message: str) -> None:
    assert callable(kind)
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        kind(text)
    assert str(caught.value) == message

"""argparse types for numbers: a bad value is one usage line naming the option (``argument
--workers: must be at least 1: '0'``), never a traceback or a settings error under another name.

Shared by the CLI and by ``loadtest``'s entry points. Standard library only: the GPU check
imports it on machines that have little more than PyTorch.
"""

from __future__ import annotations

import argparse
import math
from typing import TypeVar

T = TypeVar("T", int, float)


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _check(value: T, ok: bool, problem: str, text: str) -> T:
    if not ok:
        raise argparse.ArgumentTypeError(f"{problem}: {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    value = _whole(text)
    return _check(value, value >= 1, "must be at least 1", text)


def non_negative_int(text: str) -> int:
    """A whole number of at least 0."""
    value = _whole(text)
    return _check(value, value >= 0, "must be at least 0", text)


def positive_float(text: str) -> float:
    """A finite number above 0."""
    value = _number(text)
    return _check(value, value > 0, "must be above 0", text)


def non_negative_float(text: str) -> float:
    """A finite number of at least 0."""
    value = _number(text)
    return _check(value, value >= 0, "must be at least 0", text)


def port(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    value = _whole(text)
    return _check(value, 0 <= value <= 65535, "not a TCP port (0 to 65535)", text)

"""The parts of the stand-in provider (:mod:`devstack.standin_provider`) that need no server.

Its quota (:class:`TokenBucket`), its latency model (:func:`lognormal_s`), the reset headers'
duration format, and the request shapes it accepts: a :class:`Refused` is the one-line 4xx/5xx a
provider answers, with the error type and headers to send.
"""

from __future__ import annotations

import base64
import io
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web
from PIL import Image

from models.remote.providers import decode_data_url

__all__ = [
    "Job",
    "Refused",
    "TokenBucket",
    "encode_vector",
    "format_duration",
    "lognormal_s",
    "open_image",
    "parse_job",
    "read_json",
    "tei_body",
]

_Z99 = 2.3263478740408408  # the standard normal's 99th percentile
_MAX_PIXELS = 4096 * 4096


def lognormal_s(rng: random.Random, median_s: float, p99_s: float) -> float:
    """A latency drawn from the lognormal with this median and 99th percentile (constant if p99 <= median)."""
    if median_s <= 0:
        return 0.0
    sigma = math.log(p99_s / median_s) / _Z99 if p99_s > median_s else 0.0
    return median_s * math.exp(sigma * rng.gauss(0.0, 1.0))


class TokenBucket:
    """``rate`` units a second into a bucket of ``capacity``; starts full; never blocks."""

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self._level = capacity
        self._stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_s(self, amount: float) -> float:
        """Seconds until ``amount`` can be taken (0: now)."""
        self._refill()
        return max(0.0, (amount - self._level) / self.rate)

    def take(self, amount: float) -> None:
        self._level -= amount

    @property
    def remaining(self) -> int:
        self._refill()
        return max(0, math.floor(self._level))

    @property
    def reset_s(self) -> float:
        """Seconds until the bucket is full again."""
        self._refill()
        return (self.capacity - self._level) / self.rate


def format_duration(seconds: float) -> str:
    """A reset header's value in OpenAI's style (``"250ms"``, ``"1.5s"``, ``"6m0s"``), as Go prints durations."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"


class Refused(Exception):
    """A request answered with an error: status, message, the error type and extra headers."""

    def __init__(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


@dataclass(frozen=True)
class Job:
    inputs: list[str]
    model: str
    encoding: str  # float | base64
    tei: bool


async def read_json(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except web.HTTPRequestEntityTooLarge:
        raise Refused(413, "request body too large", "size") from None
    except (ValueError, RecursionError):
        raise Refused(400, "the body is not JSON", "invalid_request_error") from None


def parse_job(doc: Any, tei: bool, max_batch: int, model_name: str | None) -> Job:
    """Check a request body's shape; a :class:`Refused` 400/404/413 says what is wrong."""
    if not isinstance(doc, dict):
        raise Refused(400, "the body must be a JSON object", "invalid_request_error")
    raw = doc.get("inputs" if tei else "input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(s, str) and s for s in inputs):
        field_name = "inputs" if tei else "input"
        raise Refused(400, f"'{field_name}' must be a non-empty string or list of them", "invalid_request_error")
    if len(inputs) > max_batch:
        raise Refused(413, f"{len(inputs)} inputs, over the batch limit of {max_batch}", "size")
    if tei:
        return Job(inputs, "tei", "float", tei=True)
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise Refused(400, "'model' must be a non-empty string", "invalid_request_error")
    if model_name is not None and model != model_name:
        raise Refused(404, f"model {model[:80]!r} does not exist", "not_found_error")
    _check_choice(doc, "input_type", ("query", "passage"))
    _check_choice(doc, "truncate", ("NONE", "START", "END"))
    _check_choice(doc, "encoding_format", ("float", "base64"))
    return Job(inputs, model, str(doc.get("encoding_format") or "float"), tei=False)


def _check_choice(doc: dict[str, Any], name: str, allowed: Sequence[str]) -> None:
    if name in doc and doc[name] not in allowed:
        raise Refused(400, f"'{name}' must be one of {', '.join(allowed)}", "invalid_request_error")


def open_image(url: str, index: int) -> Image.Image:
    """Decode one data URL into RGB pixels; a bad one is the whole request's 400."""
    try:
        with Image.open(io.BytesIO(decode_data_url(url))) as im:
            if im.size[0] * im.size[1] > _MAX_PIXELS:
                raise ValueError(f"{im.size[0]}x{im.size[1]} pixels is too large")
            return im.convert("RGB")
    except Exception as exc:  # a stranger's bytes: PIL (or a library that patched Image.open) may raise anything
        raise Refused(400, f"input {index}: {exc}", "invalid_request_error") from None


def encode_vector(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


def tei_body(vectors: np.ndarray) -> bytes:
    return json.dumps([[float(x) for x in row] for row in vectors]).encode()

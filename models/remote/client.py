"""A hosted embedding API behind the interface of the local models: ``embed_images``, ``embed_texts``.

Each call splits its inputs into requests of ``batch_size`` items and sends them at once, each
through the flow control of this package, in this order (see ``models/remote/__init__.py``):

1. the circuit breaker (a provider that keeps failing is left alone for a cool-down; callers
   wait in :meth:`RemoteEmbedder.wait_available` instead of failing item after item),
2. the adaptive concurrency limit (grows while answers come back fast, cuts on 429/503,
   timeouts and rising latency, pauses for ``Retry-After`` and exhausted ``x-ratelimit-*``),
3. the user's hard quota (requests/s, tokens/min).

A retriable answer (429, 5xx, a timeout, a broken connection) is retried with jittered backoff up
to ``max_retries`` times, then raises :class:`ProviderUnavailable`. A permanent answer (another
4xx) to a request of several items is retried item by item, so that only the items the provider
refuses fail: :meth:`RemoteEmbedder.embed` returns them in ``refused`` with the provider's
message; ``embed_images``/``embed_texts`` raise :class:`ItemsRefused`.

The HTTP session and the flow control live on one event loop in a thread of their own, so the
synchronous embed stage calls this like a local model. The API key goes in the Authorization
header only; it is never logged and never part of an error message.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import aiohttp
import numpy as np
from PIL import Image

from models.remote import metrics
from models.remote.breaker import CircuitBreaker
from models.remote.hints import parse_rate_headers
from models.remote.limiter import AdaptiveLimiter
from models.remote.metrics import UsageWindow
from models.remote.providers import (
    ApiRequest,
    InputType,
    ProviderError,
    data_url,
    error_message,
    estimate_tokens,
    thumbnail_jpeg,
)
from models.remote.quota import Quota
from models.remote.retry import Outcome, classify
from models.remote.settings import RemoteSettings, remote_model_id
from streams.errors import backoff_s
from streams.loopthread import LoopThread

__all__ = ["ItemRefused", "ItemsRefused", "ProviderUnavailable", "RemoteEmbedder", "RemoteResult", "remote_model_id"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
Purpose = Literal["ingest", "query"]

RETRY_BASE_S, RETRY_CAP_S = 0.25, 30.0
_KEY_REFUSED = frozenset({401, 403})  # the whole provider, not an item: every input would fail alike


class ProviderUnavailable(Exception):
    """The provider kept failing with retriable errors: try the whole batch again later."""


class ItemRefused(Exception):
    """The provider refused one input for good; the message is the provider's."""


class ItemsRefused(Exception):
    """The provider refused some inputs for good (index -> the provider's message)."""

    def __init__(self, refused: dict[int, str]) -> None:
        first = next(iter(refused.items()))
        super().__init__(f"{len(refused)} input(s) refused by the provider, e.g. #{first[0]}: {first[1]}")
        self.refused = refused


@dataclass(frozen=True)
class Plan:
    """A call's requests: (request, input range, estimated tokens), and one request per input."""

    batches: list[tuple[ApiRequest, range, int]]
    singles: list[ApiRequest]


def _image_tokens(jpegs: list[bytes]) -> int:
    """An image request's cost against a tokens/min quota: its data URLs counted as text, the way
    hosted APIs bill an image sent in ``input`` (about 1,100 for a 128 px JPEG at quality 70)."""
    return estimate_tokens([data_url(jpeg) for jpeg in jpegs])


@dataclass
class RemoteResult:
    """One call's vectors (None where the provider refused the input) and what it cost."""

    vectors: list[np.ndarray | None]
    refused: dict[int, str] = field(default_factory=dict)
    tokens: int = 0
    requests: int = 0


class RemoteEmbedder:
    """Embeddings from a hosted API, with the local models' interface; ``close()`` when done."""

    def __init__(
        self, settings: RemoteSettings, *, purpose: Purpose = "ingest", rng: random.Random | None = None
    ) -> None:
        """``purpose``: ``ingest`` sends ``passage_input_type``, ``query`` sends ``query_input_type``."""
        self.settings = settings
        self.api = settings.api()
        self.model_id = remote_model_id(settings)
        self.input_type = settings.passage_input_type if purpose == "ingest" else settings.query_input_type
        self.usage = UsageWindow()
        self._rng = rng or random.Random()
        self._thread = LoopThread(f"remote-{settings.flavour}").start()
        self._thread.run(self._open())

    async def _open(self) -> None:
        s = self.settings
        self.limiter = AdaptiveLimiter(initial_limit=s.initial_concurrency, max_limit=s.max_concurrency)
        self.quota = Quota(requests_per_s=s.requests_per_s, tokens_per_min=s.tokens_per_min)
        self.breaker = CircuitBreaker()
        headers = {"Accept": "application/json"}
        if s.api_key is not None:
            headers["Authorization"] = f"Bearer {s.api_key.get_secret_value()}"
        timeout = aiohttp.ClientTimeout(total=s.timeout_s)
        self._session = aiohttp.ClientSession(headers=headers, timeout=timeout, trust_env=False)

    def close(self) -> None:
        if self._thread.alive:
            self._thread.run(self._session.close())
            self._thread.stop()

    def __enter__(self) -> RemoteEmbedder:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- the local models' interface ---------------------------------------------------------

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Unit rows, one per image, each sent as a ``image_side`` px JPEG; raises ItemsRefused."""
        return _all(self.embed(images=images))

    def embed_texts(self, texts: Sequence[str], input_type: InputType | None = None) -> np.ndarray:
        return _all(self.embed(texts=texts, input_type=input_type))

    def preprocess(self, images: Sequence[Image.Image]) -> list[bytes]:
        """What is sent of each image: a JPEG of at most ``image_side`` px (the embed stage's pool makes them)."""
        s = self.settings
        return [thumbnail_jpeg(im, s.image_side, s.image_quality) for im in images]

    def embed_prepared(self, jpegs: list[bytes]) -> list[np.ndarray | Exception]:
        """Per JPEG its unit row, or :class:`ItemRefused` with the provider's message where it was
        refused for good; raises :class:`ProviderUnavailable` when the provider cannot be reached."""
        return _per_item(self.embed(jpegs=jpegs))

    def embed_text_items(self, texts: list[str]) -> list[np.ndarray | Exception]:
        """Per string its unit row, or :class:`ItemRefused`; raises :class:`ProviderUnavailable`."""
        return _per_item(self.embed(texts=texts))

    def embed(
        self,
        *,
        images: Sequence[Image.Image] = (),
        jpegs: Sequence[bytes] = (),
        texts: Sequence[str] = (),
        input_type: InputType | None = None,
    ) -> RemoteResult:
        """Images, JPEGs or texts (one kind per call), in requests of ``batch_size``, sent concurrently."""
        kind = input_type or self.input_type
        jpegs = list(jpegs) or self.preprocess(images)
        if jpegs:
            plan = self._plan(jpegs, lambda part: self.api.build_image_request(part, kind), _image_tokens)
        else:
            plan = self._plan(list(texts), lambda part: self.api.build_request(part, kind), estimate_tokens)
        return self._thread.run(self._embed_all(plan, len(jpegs) or len(texts)))

    def _plan(self, items: list[T], build: Callable[[list[T]], ApiRequest], cost: Callable[[list[T]], int]) -> Plan:
        """The requests of ``batch_size`` items with their ranges and estimated tokens, and one per item."""
        size = self.settings.batch_size
        spans = [range(i, min(i + size, len(items))) for i in range(0, len(items), size)]
        batches = [(build(items[r.start : r.stop]), r, cost(items[r.start : r.stop])) for r in spans]
        return Plan(batches, [build([item]) for item in items])

    def wait_available(self, timeout_s: float | None = None) -> bool:
        """Probe the provider with one short text until it answers (through the breaker, so an
        open circuit is waited out first); False when ``timeout_s`` ran out or the probe failed."""
        try:
            return self._thread.run(asyncio.wait_for(self._probe(), timeout_s))
        except TimeoutError:
            return False

    async def _probe(self) -> bool:
        request = self.api.build_request(["mediavec probe"], self.input_type)
        outcome, status, _, why = await self._send(request, 1)
        if outcome != "ok":
            logger.info("%s: probe: %s", self.model_id, why)
        # A permanent 4xx proves the provider up (it refuses the probe text, not the traffic).
        return outcome != "retriable" and status not in _KEY_REFUSED

    def snapshot(self) -> dict[str, object]:
        """The provider's state for ``mediavec status``: limit, in flight, circuit, quota use.

        Read on the client's loop: the breaker's clock is that loop's, and the loop owns the counters."""
        return self._thread.run(self._snapshot(), timeout=10)

    async def _snapshot(self) -> dict[str, object]:
        s = self.settings
        rps, tpm = self.usage.rates()
        return {
            "provider": self.model_id,
            "limit": self.limiter.limit,
            "in_flight": self.limiter.in_flight,
            "circuit": self.breaker.state,
            "requests_per_s": round(rps, 3),
            "tokens_per_min": round(tpm, 1),
            "quota_requests_per_s": s.requests_per_s,
            "quota_tokens_per_min": s.tokens_per_min,
            "throttled": self.usage.throttled,
            "requests": self.usage.requests,
        }

    # -- the requests --------------------------------------------------------------------------

    async def _embed_all(self, plan: Plan, n: int) -> RemoteResult:
        result = RemoteResult(vectors=[None] * n)
        await asyncio.gather(*(self._batch(req, span, cost, plan.singles, result) for req, span, cost in plan.batches))
        return result

    async def _batch(
        self, request: ApiRequest, span: range, cost: int, singles: list[ApiRequest], result: RemoteResult
    ) -> None:
        try:
            vectors = await self._call(request, len(span), cost, result)
        except ProviderError as refused:
            if len(span) == 1:
                result.refused[span.start] = refused.message
                metrics.REFUSED.labels(self.model_id).inc()
                return
            # Which of the items did the provider refuse? Ask for each alone.
            await asyncio.gather(
                *(self._batch(singles[i], range(i, i + 1), max(1, cost // len(span)), singles, result) for i in span)
            )
            return
        for i, row in zip(span, vectors, strict=True):
            result.vectors[i] = row

    async def _call(self, request: ApiRequest, n: int, cost: int, result: RemoteResult) -> np.ndarray:
        """One request until it succeeds: ProviderError when refused for good, ProviderUnavailable when
        it never got through (or the provider refused the key)."""
        last = ""
        for attempt in range(1, self.settings.max_retries + 2):
            outcome, status, body, why = await self._send(request, cost)
            result.requests += 1
            if outcome == "ok":
                embedded = self.api.parse_response(status, body, n, max_bytes=self.settings.max_response_bytes)
                result.tokens += embedded.tokens or cost
                metrics.TOKENS.labels(self.model_id).inc(embedded.tokens or cost)
                return embedded.vectors
            if status in _KEY_REFUSED:
                raise ProviderUnavailable(f"{self.model_id}: {why} (the provider refused the API key)")
            if outcome == "permanent":
                raise ProviderError(why, status=status, kind="status")
            last = why
            await asyncio.sleep(backoff_s(attempt, RETRY_BASE_S, RETRY_CAP_S, self._rng))
        raise ProviderUnavailable(f"{self.model_id}: no answer after {self.settings.max_retries + 1} tries: {last}")

    async def _send(self, request: ApiRequest, cost: int) -> tuple[Outcome, int, bytes, str]:
        status, body, why = 0, b"", ""
        async with self.breaker.admit() as ticket, self.limiter.slot() as slot:
            await self.quota.acquire(cost)
            slot.sent()
            self.usage.add(cost)
            metrics.IN_FLIGHT.labels(self.model_id).inc()
            started = time.perf_counter()
            try:
                async with self._session.post(self.settings.endpoint(request.path), json=request.body) as reply:
                    status, headers = reply.status, reply.headers
                    body = await reply.content.read(self.settings.max_response_bytes + 1)
                outcome = classify(status)
                hint = parse_rate_headers(headers)
                why = "" if outcome == "ok" else f"HTTP {status}: {error_message(body, status)}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                outcome, hint = classify(None, exc), None
                why = f"{type(exc).__name__}: {exc}"[:300]
            finally:
                metrics.IN_FLIGHT.labels(self.model_id).dec()
            ticket.record(outcome)
            slot.report(outcome, hint=hint, status=status or None)
        self._count(outcome, status, time.perf_counter() - started)
        if outcome != "ok":
            logger.debug("%s %s: %s", self.model_id, outcome, why)
        return outcome, status, body, why

    def _count(self, outcome: Outcome, status: int, seconds: float) -> None:
        provider = self.model_id
        metrics.REQUEST_S.labels(provider).observe(seconds)
        metrics.REQUESTS.labels(provider, outcome).inc()
        metrics.LIMIT.labels(provider).set(self.limiter.limit)
        metrics.CIRCUIT_OPEN.labels(provider).set(0 if self.breaker.state == "closed" else 1)
        if status == 429:
            metrics.THROTTLED.labels(provider).inc()
            self.usage.throttled += 1


def _per_item(result: RemoteResult) -> list[np.ndarray | Exception]:
    return [ItemRefused(result.refused[i]) if v is None else v.astype(np.float32) for i, v in enumerate(result.vectors)]


def _all(result: RemoteResult) -> np.ndarray:
    if result.refused:
        raise ItemsRefused(result.refused)
    return np.stack([v for v in result.vectors if v is not None]).astype(np.float32)

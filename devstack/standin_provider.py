"""A stand-in for a hosted embedding API, on loopback: quotas, throttling and faults, real vectors.

Tests and the remote-provider benchmark point mediavec at it instead of NVIDIA's or OpenAI's
servers. It speaks the shapes of :mod:`models.remote.providers`:

=====================  =========================================================================
``POST /v1/embeddings`` the ``nim`` and ``openai`` flavours (``input``, ``model``, ``input_type``,
                        ``encoding_format`` float or base64, ``truncate``); images as data URLs
``POST /embed``         the ``tei`` flavour (``inputs``; answers ``[[...], ...]``), text only
=====================  =========================================================================

and behaves like a provider under load (:class:`StandinConfig`):

* ``Authorization: Bearer <api_key>`` or 401; a malformed body is a 400 with a one-line message;
  too many inputs or tokens in one request a 413.
* A token-bucket quota on requests/s and tokens/min (tokens as
  :func:`models.remote.providers.estimate_tokens` counts them) and a concurrency cap. Over
  either: 429 with ``Retry-After`` (whole seconds), ``retry-after-ms`` and
  ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` (limit: the bucket's size; reset: until
  it is full again, as ``"250ms"``/``"6m0s"``). Every answer carries the ``x-ratelimit-*`` headers.
* Injected faults, drawn per request from a seeded generator: 5xx at ``error_rate``, hangs of
  ``hang_s`` (past the client's timeout) at ``hang_rate``, and lognormal latency with a median
  and a p99.
* A content policy (``refuse_image``): an image it flags is a 400 naming the input and why.
* Vectors from a real local model (the random-weight open_clip ViT-B-32 unless told otherwise):
  an image input is decoded from its data URL and embedded as the model's ``embed_images`` would,
  a text with ``embed_texts``, so a stored vector can be checked against the model's own output.

:meth:`StandinProvider.counters` is what tests and the benchmark read. ``python -m
devstack.standin_provider --help`` serves one by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import math
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from aiohttp import web
from PIL import Image

from devstack.standin_parts import (
    Job,
    Refused,
    TokenBucket,
    encode_vector,
    format_duration,
    lognormal_s,
    open_image,
    parse_job,
    read_json,
    tei_body,
)
from mediavec.appserver import AppServer
from models.clip import ClipEmbedder
from models.remote.providers import estimate_tokens
from models.settings import ModelSettings

__all__ = ["RANDOM_CLIP", "StandinConfig", "StandinCounters", "StandinProvider"]
logger = logging.getLogger(__name__)

RANDOM_CLIP = ModelSettings(allow_random_weights=True, device="cpu")  # the tests' model: no weights to fetch


@dataclass(frozen=True)
class StandinConfig:
    """How the stand-in behaves; every limit unset (None, 0) is off."""

    api_key: str | None = "standin-key"  # None: no Authorization needed (a self-hosted server)
    model: str | None = None  # set: other model names get 404
    requests_per_s: float | None = None
    tokens_per_min: float | None = None
    request_burst_s: float = 1.0  # the request bucket holds this many seconds of quota
    token_burst_s: float = 60.0  # the token bucket holds a minute's tokens, like a per-minute quota
    max_concurrency: int | None = None  # over it: 429 at once
    max_batch: int = 128  # inputs per request; more: 413
    error_rate: float = 0.0  # share of admitted requests answered error_status
    error_status: int = 503
    hang_rate: float = 0.0  # share of admitted requests that wait hang_s first
    hang_s: float = 120.0
    latency_median_s: float = 0.0
    latency_p99_s: float = 0.0  # above the median: a lognormal tail
    shuffle_order: bool = False  # answer data[] out of order (the index says where each belongs)
    seed: int | None = 0
    max_body_bytes: int = 32 << 20
    # A content policy: an image it gives a reason for makes the request a 400 with that reason
    # (as a hosted API refuses an input its safety filter flags), so tests can plant refusals.
    refuse_image: Callable[[Image.Image], str | None] | None = None
    model_settings: ModelSettings = field(
        default_factory=lambda: ModelSettings(allow_random_weights=True, device="cpu")
    )


@dataclass(frozen=True)
class StandinCounters:
    """What the stand-in has seen since it started (or :meth:`StandinProvider.reset_counters`)."""

    requests: int = 0  # every POST to an embeddings path
    ok: int = 0
    unauthorized: int = 0
    bad_requests: int = 0  # 400, 404, 413
    rate_limited: int = 0  # every 429, the concurrency cap's included
    concurrency_refusals: int = 0
    errors_injected: int = 0
    hangs: int = 0
    max_concurrent: int = 0  # admitted requests in progress at once
    tokens: int = 0  # billed on 200 answers
    items: int = 0  # inputs embedded on 200 answers


class StandinProvider(AppServer):
    """The stand-in on ``host:port`` (0: a free port); ``embedder`` shares a model already loaded."""

    def __init__(
        self,
        config: StandinConfig | None = None,
        embedder: ClipEmbedder | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self.config = config or StandinConfig()
        self.embedder = embedder
        self._rng = random.Random(self.config.seed)
        self._lock = threading.Lock()
        self._counters = StandinCounters()
        self._in_flight = 0
        self._pool: ThreadPoolExecutor | None = None
        cfg = self.config
        # a bucket holds burst_s seconds of its rate; the request bucket at least one request
        self._requests = _bucket(cfg.requests_per_s, cfg.request_burst_s, 1.0)
        self._tokens = _bucket(cfg.tokens_per_min / 60 if cfg.tokens_per_min else None, cfg.token_burst_s, 0.0)

    # -- life and counters ----------------------------------------------------------------------

    def start(self) -> StandinProvider:
        if self.embedder is None:
            self.embedder = ClipEmbedder.load(self.config.model_settings)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="standin-model")
        super().start()
        logger.info("stand-in provider on %s (model %s)", self.base_url, self.embedder.model_id)
        return self

    def stop(self) -> None:
        super().stop()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def counters(self) -> StandinCounters:
        with self._lock:
            return self._counters

    @property
    def in_flight(self) -> int:
        """Admitted requests not yet answered (a hung one until its client goes)."""
        with self._lock:
            return self._in_flight

    def reset_counters(self) -> None:
        with self._lock:
            self._counters = StandinCounters(max_concurrent=self._in_flight)

    def _count(self, **increments: int) -> None:
        with self._lock:
            c = self._counters
            self._counters = replace(c, **{k: getattr(c, k) + v for k, v in increments.items()})

    # -- HTTP -----------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_post("/v1/embeddings", self._v1)
        app.router.add_post("/embed", self._tei)
        return app

    async def _v1(self, request: web.Request) -> web.Response:
        return await self._serve(request, tei=False)

    async def _tei(self, request: web.Request) -> web.Response:
        return await self._serve(request, tei=True)

    async def _serve(self, request: web.Request, *, tei: bool) -> web.Response:
        self._count(requests=1)
        try:
            self._authorize(request)
            job = parse_job(await read_json(request), tei, self.config.max_batch, self.config.model)
            tokens = estimate_tokens(job.inputs)
            self._admit(tokens)
        except Refused as refused:
            return self._refusal(refused, tei)
        try:
            return await self._answer(job, tokens)
        except Refused as refused:
            return self._refusal(refused, tei)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _authorize(self, request: web.Request) -> None:
        key = self.config.api_key
        if key is None:
            return
        given = request.headers.get("Authorization", "")
        if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), key.encode())):
            raise Refused(401, "missing or invalid API key", "authentication_error")

    def _admit(self, tokens: int) -> None:
        """The concurrency cap, then both buckets; on success a slot is held and the quota taken."""
        cfg = self.config
        if self._tokens is not None and tokens > self._tokens.capacity:
            raise Refused(413, f"{tokens} tokens in one request, over the quota's {self._tokens.capacity:g}", "size")
        with self._lock:
            if cfg.max_concurrency is not None and self._in_flight >= cfg.max_concurrency:
                self._counters = replace(self._counters, concurrency_refusals=self._counters.concurrency_refusals + 1)
                raise Refused(429, "too many concurrent requests", "rate_limit", {"Retry-After": "1"})
            wait = max(
                self._requests.wait_s(1) if self._requests else 0.0,
                self._tokens.wait_s(tokens) if self._tokens else 0.0,
            )
            if wait > 0:
                headers = {"Retry-After": str(math.ceil(wait)), "retry-after-ms": str(math.ceil(wait * 1000))}
                raise Refused(429, f"rate limit exceeded, retry in {wait:.3f}s", "rate_limit", headers)
            if self._requests:
                self._requests.take(1)
            if self._tokens:
                self._tokens.take(tokens)
            self._in_flight += 1
            c = self._counters
            self._counters = replace(c, max_concurrent=max(c.max_concurrent, self._in_flight))

    async def _answer(self, job: Job, tokens: int) -> web.Response:
        cfg = self.config
        hang, fail = self._rng.random() < cfg.hang_rate, self._rng.random() < cfg.error_rate
        if hang:
            self._count(hangs=1)
            await asyncio.sleep(cfg.hang_s)
        await asyncio.sleep(lognormal_s(self._rng, cfg.latency_median_s, cfg.latency_p99_s))
        if fail:
            self._count(errors_injected=1)
            raise Refused(cfg.error_status, "injected server error", "server_error")
        loop = asyncio.get_running_loop()
        vectors = await loop.run_in_executor(self._pool, self._embed, job.inputs, job.tei)
        self._count(ok=1, tokens=tokens, items=len(job.inputs))
        body = tei_body(vectors) if job.tei else self._v1_body(job, vectors, tokens)
        return web.Response(body=body, content_type="application/json", headers=self._quota_headers())

    def _embed(self, inputs: list[str], tei: bool) -> np.ndarray:
        """Images (data URLs) through ``embed_images``, texts through ``embed_texts``, back in input order."""
        assert self.embedder is not None
        is_image = [not tei and item.startswith("data:") for item in inputs]
        out = np.zeros((len(inputs), self.embedder.dim), dtype=np.float32)
        images = [i for i, flag in enumerate(is_image) if flag]
        texts = [i for i, flag in enumerate(is_image) if not flag]
        if images:
            decoded = [open_image(inputs[i], i) for i in images]
            self._apply_policy(decoded, images)
            out[images] = self.embedder.embed_images(decoded)
        if texts:
            out[texts] = self.embedder.embed_texts([inputs[i] for i in texts])
        return out

    def _apply_policy(self, images: list[Image.Image], slots: list[int]) -> None:
        policy = self.config.refuse_image
        for image, slot in zip(images, slots, strict=True):
            reason = policy(image) if policy is not None else None
            if reason:
                raise Refused(400, f"input {slot}: refused by the content policy: {reason}", "invalid_request_error")

    def _v1_body(self, job: Job, vectors: np.ndarray, tokens: int) -> bytes:
        order = list(range(len(vectors)))
        if self.config.shuffle_order:
            self._rng.shuffle(order)
        data = [
            {"object": "embedding", "index": i, "embedding": encode_vector(vectors[i], job.encoding)} for i in order
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return json.dumps({"object": "list", "data": data, "model": job.model, "usage": usage}).encode()

    def _quota_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, bucket in (("requests", self._requests), ("tokens", self._tokens)):
            if bucket is not None:
                headers[f"x-ratelimit-limit-{name}"] = str(math.floor(bucket.capacity))
                headers[f"x-ratelimit-remaining-{name}"] = str(bucket.remaining)
                headers[f"x-ratelimit-reset-{name}"] = format_duration(bucket.reset_s)
        return headers

    def _refusal(self, refused: Refused, tei: bool) -> web.Response:
        status = refused.status
        if status == 401:
            self._count(unauthorized=1)
        elif status == 429:
            self._count(rate_limited=1)
        elif status < 500:
            self._count(bad_requests=1)
        error: dict[str, Any] = (
            {"error": refused.message, "error_type": refused.kind}
            if tei
            else {"error": {"message": refused.message, "type": refused.kind, "code": status}}
        )
        headers = {**self._quota_headers(), **refused.headers}
        return web.json_response(error, status=status, headers=headers)


def _bucket(rate_per_s: float | None, burst_s: float, least: float) -> TokenBucket | None:
    return TokenBucket(rate_per_s, max(least, rate_per_s * burst_s)) if rate_per_s else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a stand-in embedding provider (nim/openai/tei) on loopback.")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--key", default="standin-key", help="the API key it asks for ('' for none)")
    parser.add_argument("--rps", type=float, default=None, help="requests/s quota")
    parser.add_argument("--tpm", type=float, default=None, help="tokens/min quota")
    parser.add_argument("--concurrency", type=int, default=None, help="concurrent requests admitted")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered 503")
    parser.add_argument("--hang-rate", type=float, default=0.0, help="share of requests that hang 120 s")
    parser.add_argument("--latency-median", type=float, default=0.0, help="median latency, seconds")
    parser.add_argument("--latency-p99", type=float, default=0.0, help="p99 latency, seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = StandinConfig(
        api_key=args.key or None,
        requests_per_s=args.rps,
        tokens_per_min=args.tpm,
        max_concurrency=args.concurrency,
        error_rate=args.error_rate,
        hang_rate=args.hang_rate,
        latency_median_s=args.latency_median,
        latency_p99_s=args.latency_p99,
    )
    with StandinProvider(config, port=args.port) as server:
        print(f"stand-in provider: {server.base_url} (POST /v1/embeddings, POST /embed); Ctrl-C stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
        print(server.counters(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

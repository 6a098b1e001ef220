"""The stand-in embedding provider (devstack.standin_provider), over real HTTP on loopback.

Its vectors are the random-weight ViT-B-32's own (cosine >= 0.999 against ``embed_images`` on the
same decoded 128 px JPEG), it refuses a missing key, throttles over its token buckets and its
concurrency cap with the headers a client reads, injects 5xx and hangs, and answers any body a
stranger sends with a one-line 4xx, never a 500.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import skimage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from devstack.standin_parts import TokenBucket, format_duration, lognormal_s
from devstack.standin_provider import RANDOM_CLIP, StandinConfig, StandinProvider
from models.clip import ClipEmbedder
from models.remote.hints import parse_duration, parse_rate_headers
from models.remote.providers import ProviderApi, ProviderError, data_url, thumbnail_jpeg

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")
KEY = "standin-key"
MODEL = "nvidia/nvclip"


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


async def _post(base: str, path: str, body: Any, key: str | None, timeout_s: float) -> Answer:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
        session.post(base + path, data=data, headers={**headers, "Content-Type": "application/json"}) as resp,
    ):
        return Answer(resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.read())


def post(server: StandinProvider, path: str, body: Any, key: str | None = KEY, timeout_s: float = 60) -> Answer:
    return asyncio.run(_post(server.base_url, path, body, key, timeout_s))


@pytest.fixture(scope="module")
def embedder() -> ClipEmbedder:
    return ClipEmbedder.load(RANDOM_CLIP)


@pytest.fixture(scope="module")
def server(embedder: ClipEmbedder) -> Iterator[StandinProvider]:
    with StandinProvider(StandinConfig(shuffle_order=True), embedder) as running:
        yield running


def standin(embedder: ClipEmbedder, **config: Any) -> StandinProvider:
    return StandinProvider(StandinConfig(**config), embedder)


def thumbnails() -> list[bytes]:
    out = []
    for name in PHOTOS:
        with Image.open(SKIMAGE_DATA / name) as im:
            out.append(thumbnail_jpeg(im, 128, 70))
    return out


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    return np.sum(a32 * b32, axis=1) / (np.linalg.norm(a32, axis=1) * np.linalg.norm(b32, axis=1))


# -- vectors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", [ProviderApi("nim", MODEL), ProviderApi("openai", MODEL, encoding_format="base64")])
def test_image_vectors_are_the_models_own(server: StandinProvider, embedder: ClipEmbedder, api: ProviderApi) -> None:
    jpegs = thumbnails()
    path, body = api.build_image_request(jpegs)
    answer = post(server, path, body)
    assert answer.status == 200, answer.body[:200]
    got = api.parse_response(answer.status, answer.body, len(jpegs), dim=embedder.dim)
    decoded = [Image.open(io.BytesIO(j)).convert("RGB") for j in jpegs]  # the model on the same JPEG pixels
    want = embedder.embed_images(decoded)
    assert cosines(got.vectors, want).min() >= 0.999
    assert got.tokens == sum(-(-len(data_url(j)) // 4) for j in jpegs)
    assert cosines(got.vectors[:1], want[1:2]).max() < 0.999  # in input order, though data[] came shuffled


def test_text_vectors_through_nim_and_tei(server: StandinProvider, embedder: ClipEmbedder) -> None:
    texts = ["a photo of a cat", "a rocket on its launch pad"]
    want = embedder.embed_texts(texts)
    nim = ProviderApi("nim", MODEL)
    answer = post(server, *nim.build_request(texts, "query"))
    assert cosines(nim.parse_response(answer.status, answer.body, 2).vectors, want).min() >= 0.999
    tei = ProviderApi("tei", "any")
    answer = post(server, *tei.build_request(texts))
    assert cosines(tei.parse_response(answer.status, answer.body, 2).vectors, want).min() >= 0.999


def test_mixed_batch_keeps_input_order(server: StandinProvider, embedder: ClipEmbedder) -> None:
    jpeg = thumbnails()[0]
    inputs = ["a red bus", data_url(jpeg), "an astronaut"]
    api = ProviderApi("openai", MODEL)
    answer = post(server, *api.build_request(inputs, None))
    got = api.parse_response(answer.status, answer.body, 3).vectors
    image = embedder.embed_images([Image.open(io.BytesIO(jpeg)).convert("RGB")])
    texts = embedder.embed_texts(["a red bus", "an astronaut"])
    assert cosines(got, np.concatenate([texts[:1], image, texts[1:]])).min() >= 0.999


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "wrong-key", ""])
def test_a_missing_or_wrong_key_is_401(server: StandinProvider, key: str | None) -> None:
    before = server.counters().unauthorized
    answer = post(server, "/v1/embeddings", {"input": ["x"], "model": MODEL}, key=key)
    assert answer.status == 401 and answer.json()["error"]["message"] == "missing or invalid API key"
    assert server.counters().unauthorized == before + 1
    with pytest.raises(ProviderError, match="HTTP 401: missing or invalid API key"):
        ProviderApi("nim", MODEL).parse_response(answer.status, answer.body, 1)


@pytest.mark.parametrize(
    ("path", "body", "status", "reason"),
    [
        ("/v1/embeddings", b"{not json", 400, "not JSON"),
        ("/v1/embeddings", {"model": MODEL}, 400, "'input' must be"),
        ("/v1/embeddings", {"input": [], "model": MODEL}, 400, "'input' must be"),
        ("/v1/embeddings", {"input": ["x", 3], "model": MODEL}, 400, "'input' must be"),
        ("/v1/embeddings", {"input": ["x"]}, 400, "'model' must be"),
        ("/v1/embeddings", {"input": ["x"], "model": MODEL, "input_type": "doc"}, 400, "'input_type' must be"),
        ("/v1/embeddings", {"input": ["x"], "model": MODEL, "encoding_format": "int8"}, 400, "'encoding_format'"),
        ("/v1/embeddings", {"input": ["data:image/jpeg;base64,AAAA"], "model": MODEL}, 400, "input 0:"),
        ("/v1/embeddings", {"input": ["data:image/png;base64,!!"], "model": MODEL}, 400, "payload is malformed"),
        ("/v1/embeddings", {"input": ["x", "data:text/plain,hi"], "model": MODEL}, 400, "input 1: not a base64"),
        ("/v1/embeddings", {"input": ["x"] * 129, "model": MODEL}, 413, "over the batch limit of 128"),
        ("/embed", {"inputs": None}, 400, "'inputs' must be"),
        ("/embed", [1, 2], 400, "must be a JSON object"),
    ],
)
def test_malformed_bodies_are_one_line_4xx(
    server: StandinProvider, path: str, body: Any, status: int, reason: str
) -> None:
    answer = post(server, path, body)
    assert answer.status == status
    api = ProviderApi("tei" if path == "/embed" else "nim", MODEL)
    with pytest.raises(ProviderError, match=reason) as err:
        api.parse_response(answer.status, answer.body, 1)
    assert err.value.kind == "status" and "\n" not in err.value.message


def test_unknown_model_is_404(embedder: ClipEmbedder) -> None:
    with standin(embedder, model=MODEL) as server:
        assert post(server, "/v1/embeddings", {"input": ["x"], "model": "other"}).status == 404
        assert post(server, "/v1/embeddings", {"input": ["x"], "model": MODEL}).status == 200


# -- quotas ---------------------------------------------------------------------------------------


def test_request_quota_answers_429_with_rate_limit_headers(embedder: ClipEmbedder) -> None:
    with standin(embedder, requests_per_s=0.01) as server:  # one request, then one per 100 s
        ok = post(server, "/v1/embeddings", {"input": ["x"], "model": MODEL})
        assert ok.status == 200 and ok.headers["x-ratelimit-remaining-requests"] == "0"
        assert ok.headers["x-ratelimit-limit-requests"] == "1"
        refused = post(server, "/v1/embeddings", {"input": ["x"], "model": MODEL})
        assert refused.status == 429 and "rate limit exceeded" in refused.json()["error"]["message"]
        hint = parse_rate_headers(refused.headers)
        assert hint.remaining_requests == 0 and hint.retry_after_s is not None and 90 <= hint.retry_after_s <= 100
        assert hint.reset_requests_s is not None and 90 <= hint.reset_requests_s <= 100
        assert 90_000 <= int(refused.headers["retry-after-ms"]) <= 100_000
        counters = server.counters()
        assert (counters.requests, counters.ok, counters.rate_limited) == (2, 1, 1)


def test_token_quota_counts_what_is_sent(embedder: ClipEmbedder) -> None:
    with standin(embedder, tokens_per_min=60) as server:  # a bucket of 60 tokens, one back a second
        body = {"input": ["x" * 200], "model": MODEL}  # 50 tokens
        first = post(server, "/v1/embeddings", body)
        assert first.status == 200 and first.json()["usage"] == {"prompt_tokens": 50, "total_tokens": 50}
        assert int(first.headers["x-ratelimit-remaining-tokens"]) in range(10, 13)
        second = post(server, "/v1/embeddings", body)
        assert second.status == 429 and parse_rate_headers(second.headers).remaining_tokens in range(10, 13)
        assert post(server, "/v1/embeddings", {"input": ["x" * 400], "model": MODEL}).status == 413  # never fits
        assert server.counters().tokens == 50


def test_concurrency_cap_refuses_the_one_too_many_and_frees_slots(embedder: ClipEmbedder) -> None:
    async def scenario(server: StandinProvider) -> tuple[list[Answer | BaseException], Answer]:
        body = {"input": ["x"], "model": MODEL}
        held = [asyncio.create_task(_post(server.base_url, "/v1/embeddings", body, KEY, 60)) for _ in range(2)]
        deadline = time.monotonic() + 30
        while server.counters().max_concurrent < 2 and time.monotonic() < deadline:  # both admitted, hanging
            await asyncio.sleep(0.01)
        extra = await _post(server.base_url, "/v1/embeddings", body, KEY, 60)
        for task in held:
            task.cancel()
        return list(await asyncio.gather(*held, return_exceptions=True)), extra

    with standin(embedder, max_concurrency=2, hang_rate=1.0, hang_s=600) as server:
        _, extra = asyncio.run(scenario(server))
        assert extra.status == 429 and extra.json()["error"]["message"] == "too many concurrent requests"
        assert extra.headers["retry-after"] == "1"
        counters = server.counters()
        assert (counters.concurrency_refusals, counters.rate_limited, counters.hangs) == (1, 1, 2)
        assert counters.max_concurrent == 2
        deadline = time.monotonic() + 30
        while server.in_flight and time.monotonic() < deadline:  # the cancelled clients' handlers end
            time.sleep(0.01)
        assert server.in_flight == 0


def test_injected_5xx_are_counted_and_retriable_statuses(embedder: ClipEmbedder) -> None:
    with standin(embedder, error_rate=1.0) as server:
        answers = [post(server, "/v1/embeddings", {"input": ["x"], "model": MODEL}) for _ in range(3)]
        assert [a.status for a in answers] == [503] * 3
        with pytest.raises(ProviderError, match="HTTP 503: injected server error"):
            ProviderApi("nim", MODEL).parse_response(answers[0].status, answers[0].body, 1)
        assert server.counters().errors_injected == 3 and server.counters().ok == 0


def test_a_hang_outlasts_the_client_timeout(embedder: ClipEmbedder) -> None:
    with standin(embedder, hang_rate=1.0, hang_s=600) as server:
        with pytest.raises(TimeoutError):
            post(server, "/v1/embeddings", {"input": ["x"], "model": MODEL}, timeout_s=0.5)
        assert server.counters().hangs == 1 and server.counters().ok == 0


# -- the parts ------------------------------------------------------------------------------------


def test_lognormal_latency_has_the_asked_median_and_p99() -> None:
    rng = random.Random(7)
    samples = np.array([lognormal_s(rng, 0.2, 2.0) for _ in range(20_000)])
    assert np.median(samples) == pytest.approx(0.2, rel=0.05)
    assert np.percentile(samples, 99) == pytest.approx(2.0, rel=0.1)
    assert lognormal_s(rng, 0.3, 0.0) == 0.3 and lognormal_s(rng, 0.0, 5.0) == 0.0


def test_token_bucket_starts_full_and_owes_the_deficit() -> None:
    bucket = TokenBucket(rate=2.0, capacity=10.0)
    assert bucket.wait_s(10) == 0 and bucket.remaining == 10
    bucket.take(10)
    assert bucket.wait_s(4) == pytest.approx(2.0, abs=0.05) and bucket.reset_s == pytest.approx(5.0, abs=0.05)


@pytest.mark.parametrize(("seconds", "text"), [(0.25, "250ms"), (0.0, "0ms"), (1.5, "1.5s"), (360, "6m0s")])
def test_reset_durations_read_back_with_the_clients_parser(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


# -- fuzz: whatever a client sends ------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=20,
)
BODY = (
    st.binary(max_size=200)
    | JSON.map(lambda d: json.dumps(d).encode())
    | st.fixed_dictionaries(
        {"input": JSON | st.lists(st.text(max_size=5), max_size=3), "model": JSON | st.just(MODEL)},
        optional={"input_type": JSON, "encoding_format": JSON, "truncate": JSON},
    ).map(lambda d: json.dumps(d).encode())
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODY, path=st.sampled_from(["/v1/embeddings", "/embed"]))
def test_fuzz_any_body_is_answered_200_or_4xx(server: StandinProvider, body: bytes, path: str) -> None:
    answer = post(server, path, body)
    assert answer.status in (200, 400, 404, 413), answer.body[:200]
    if answer.status != 200:
        message = answer.json()["error"]
        text = message if isinstance(message, str) else message["message"]
        assert text.isprintable() and len(text) < 300


# -- the command ----------------------------------------------------------------------------------


def test_the_command_serves_until_ctrl_c() -> None:
    command = [sys.executable, "-m", "devstack.standin_provider", "--rps", "5", "--key", "k"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("stand-in provider: http://127.0.0.1:"), first
        base = first.split()[2]
        answer = asyncio.run(_post(base, "/v1/embeddings", {"input": ["x"], "model": MODEL}, "k", 60))
        assert answer.status == 200 and answer.headers["x-ratelimit-limit-requests"] == "5"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "requests=1, ok=1" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

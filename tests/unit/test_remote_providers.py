"""The hosted embedding APIs' shapes (models.remote.providers) and the remote provider's settings.

Requests are checked field by field against the documented bodies; answers from a stranger's
server are fuzzed (arbitrary bytes, arbitrary JSON, well-shaped JSON with hostile numbers): the
parser returns float32 unit rows in input order or raises ProviderError, never anything else.
"""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError

from models.remote.providers import (
    MAX_RESPONSE_BYTES,
    Embedded,
    ProviderApi,
    ProviderError,
    data_url,
    decode_data_url,
    error_message,
    estimate_tokens,
    thumbnail_jpeg,
)
from models.remote.settings import RemoteSettings

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
NIM = ProviderApi("nim", "nvidia/nvclip")
OPENAI = ProviderApi("openai", "text-embedding-3-small", encoding_format="base64")
TEI = ProviderApi("tei", "bge")
APIS = (NIM, OPENAI, TEI)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def v1_answer(rows: list[Any], order: list[int] | None = None, usage: Any = None) -> bytes:
    order = list(range(len(rows))) if order is None else order
    doc: dict[str, Any] = {"object": "list", "data": [{"index": i, "embedding": rows[i]} for i in order]}
    if usage is not None:
        doc["usage"] = usage
    return json.dumps(doc).encode()


def b64(row: list[float]) -> str:
    return base64.b64encode(np.asarray(row, dtype="<f4").tobytes()).decode()


# -- requests -------------------------------------------------------------------------------------


def test_nim_request_is_the_documented_body() -> None:
    path, body = NIM.build_request(["a red bus"], "query")
    assert path == "/v1/embeddings"
    assert body == {
        "input": ["a red bus"],
        "model": "nvidia/nvclip",
        "input_type": "query",
        "encoding_format": "float",
        "truncate": "END",
    }


def test_image_requests_carry_jpeg_data_urls_as_passages() -> None:
    jpeg = thumbnail_jpeg(Image.new("RGB", (300, 200), (200, 30, 30)))
    path, body = NIM.build_image_request([jpeg, jpeg])
    assert path == "/v1/embeddings" and body["input_type"] == "passage"
    assert all(s.startswith("data:image/jpeg;base64,") for s in body["input"])
    assert decode_data_url(body["input"][1]) == jpeg
    _, openai = OPENAI.build_image_request([jpeg])
    assert openai == {"input": [data_url(jpeg)], "model": OPENAI.model, "encoding_format": "base64"}
    _, bare = ProviderApi("nim", "nvidia/nvclip", truncate=None).build_image_request([jpeg], None)
    assert bare == {"input": [data_url(jpeg)], "model": "nvidia/nvclip", "encoding_format": "float"}


def test_tei_request_and_its_refusal_of_images() -> None:
    assert TEI.build_request(["x", "y"]) == ("/embed", {"inputs": ["x", "y"], "normalize": True, "truncate": True})
    with pytest.raises(ProviderError) as err:
        TEI.build_image_request([b"\xff\xd8"])
    assert err.value.kind == "unsupported"
    with pytest.raises(ValueError, match="at least one"):
        NIM.build_request([])


# -- answers --------------------------------------------------------------------------------------


def test_v1_answer_is_reordered_by_index_normalised_and_billed() -> None:
    rows = [[3.0, 4.0], [0.0, -2.0], [1.0, 1.0]]
    got = NIM.parse_response(200, v1_answer(rows, [2, 0, 1], {"prompt_tokens": 7, "total_tokens": 9}), 3)
    want = np.array([[0.6, 0.8], [0.0, -1.0], [math.sqrt(0.5), math.sqrt(0.5)]], dtype=np.float32)
    assert got.vectors.dtype == np.float32 and got.vectors.shape == (3, 2)
    np.testing.assert_allclose(got.vectors, want, atol=1e-6)
    assert got.tokens == 9
    assert NIM.parse_response(200, v1_answer(rows, usage={"prompt_tokens": 5}), 3).tokens == 5
    assert NIM.parse_response(200, v1_answer(rows, usage={"total_tokens": "9"}), 3).tokens is None


def test_base64_float32_embeddings_decode_like_floats() -> None:
    rows = [[0.25, -1.5, 3.0], [1e-3, 2.0, -0.5]]
    floats = OPENAI.parse_response(200, v1_answer(rows), 2).vectors
    packed = OPENAI.parse_response(200, v1_answer([b64(r) for r in rows], [1, 0]), 2).vectors
    np.testing.assert_allclose(packed, floats, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(packed, axis=1), 1.0, atol=1e-6)


def test_tei_answer_is_a_list_of_rows() -> None:
    got = TEI.parse_response(200, b"[[1, 0], [0, 2]]", 2, dim=2)
    np.testing.assert_array_equal(got.vectors, np.array([[1, 0], [0, 1]], dtype=np.float32))
    assert got.tokens is None


def test_huge_finite_components_normalise_without_overflow() -> None:
    got = NIM.parse_response(200, v1_answer([[1e308, 1e308], [5e-324, 0.0]]), 2)
    np.testing.assert_allclose(got.vectors, [[math.sqrt(0.5), math.sqrt(0.5)], [1.0, 0.0]], atol=1e-6)


@pytest.mark.parametrize(
    ("body", "expected", "dim", "reason"),
    [
        (b"<html>bad gateway</html>", 1, None, "not JSON"),
        (b'{"data": [{"index": 0, "embedding": [1.0]}]}', 2, None, "1 embeddings for 2 inputs"),
        (b'{"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]}', 2, None, "indices"),
        (b'{"data": [{"index": 1, "embedding": [1.0]}, {"index": 2, "embedding": [1.0]}]}', 2, None, "indices"),
        (b'{"data": [{"index": true, "embedding": [1.0]}]}', 1, None, "indices"),
        (b'{"data": [{"embedding": [1.0]}]}', 1, None, "indices"),
        (b'{"data": [{"index": 0, "embedding": [NaN, 1.0]}]}', 1, None, "NaN or infinity"),
        (b'{"data": [{"index": 0, "embedding": [Infinity, 1.0]}]}', 1, None, "NaN or infinity"),
        (b'{"data": [{"index": 0, "embedding": [1, 2]}, {"index": 1, "embedding": [1]}]}', 2, None, "widths"),
        (b'{"data": [{"index": 0, "embedding": [1, 2]}]}', 1, 3, "widths"),
        (b'{"data": [{"index": 0, "embedding": []}]}', 1, None, "widths"),
        (b'{"data": [{"index": 0, "embedding": [0, 0.0]}]}', 1, None, "all zeros"),
        (b'{"data": [{"index": 0, "embedding": [true, 1.0]}]}', 1, None, "not a list of numbers"),
        (b'{"data": [{"index": 0, "embedding": ["1.0", 1.0]}]}', 1, None, "not a list of numbers"),
        (b'{"data": [{"index": 0, "embedding": [1' + b"0" * 400 + b", 1]}]}", 1, None, "not a list of numbers"),
        (b'{"data": [{"index": 0, "embedding": "AAAA="}]}', 1, None, "not a list of numbers"),
        (b'{"data": [{"index": 0, "embedding": "AAA"}]}', 1, None, "not a list of numbers"),
        (b'{"data": {"0": [1.0]}}', 1, None, "no 'data' list"),
        (b'{"error": {"message": "quota exhausted"}}', 1, None, "quota exhausted"),
        (b"[" * 100_000 + b"]" * 100_000, 1, None, "not JSON"),
        (b"\xff\xfe{}", 1, None, "not JSON"),
    ],
)
def test_bad_v1_answers_are_provider_errors(body: bytes, expected: int, dim: int | None, reason: str) -> None:
    with pytest.raises(ProviderError, match=reason) as err:
        NIM.parse_response(200, body, expected, dim)
    assert err.value.kind == "malformed" and err.value.status == 200


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"error": "Model is overloaded", "error_type": "overloaded"}', "Model is overloaded"),
        (b"{}", "an object where a list"),
        (b'"hello"', "a JSON str"),
        (b"[[1, 2], [3]]", "widths"),
        (b"[[1, 2]]", "1 embeddings for 2 inputs"),
    ],
)
def test_bad_tei_answers_are_provider_errors(body: bytes, reason: str) -> None:
    with pytest.raises(ProviderError, match=reason):
        TEI.parse_response(200, body, 2)


def test_huge_body_is_refused_unread() -> None:
    with pytest.raises(ProviderError, match="over"):
        NIM.parse_response(200, b" " * (MAX_RESPONSE_BYTES + 1), 1)
    with pytest.raises(ProviderError, match="response of 2048 bytes is over 1024"):
        NIM.parse_response(200, b" " * 2048, 1, max_bytes=1024)


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (429, b'{"error": {"message": "Rate limit reached", "type": "requests"}}', "Rate limit reached"),
        (413, b'{"error": "Batch size error", "error_type": "validation"}', "Batch size error"),
        (422, b'{"type": "about:blank", "status": 422, "title": "Unprocessable", "detail": "bad input_type"}', "bad"),
        (422, b'{"detail": [{"loc": ["body", "input"], "msg": "field required"}]}', "field required"),
        (400, b'{"object": "error", "message": "Input too long", "code": 400}', "Input too long"),
        (502, b"<html>\n<h1>502 Bad Gateway</h1>\n</html>", "<html> <h1>502 Bad Gateway</h1> </html>"),
        (503, b"", "HTTP 503 with an empty body"),
    ],
)
def test_error_answers_carry_the_providers_message(status: int, body: bytes, message: str) -> None:
    with pytest.raises(ProviderError) as err:
        NIM.parse_response(status, body, 1)
    assert err.value.kind == "status" and err.value.status == status
    assert err.value.message.startswith(message)
    assert str(err.value) == f"HTTP {status}: {err.value.message}"


def test_error_message_is_one_bounded_printable_line() -> None:
    line = error_message(b"\x00\x1b[31mboom\r\n" + "é".encode() * 5000, 500)
    assert line.startswith("[31mboom é") and len(line) <= 300 and line.isprintable()


# -- fuzz: whatever a server sends ------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)
NUMBER = st.floats() | st.integers(min_value=-(10**400), max_value=10**400) | st.booleans() | st.none()
ROW = st.lists(NUMBER, min_size=0, max_size=6) | st.binary(max_size=24).map(lambda b: base64.b64encode(b).decode())


def check_outcome(api: ProviderApi, status: int, body: bytes, expected: int, dim: int | None = None) -> None:
    """The property: unit float32 rows of the right shape, or a ProviderError; nothing else escapes."""
    try:
        got = api.parse_response(status, body, expected, dim)
    except ProviderError as err:
        assert err.message and err.message.isprintable() and len(err.message) <= 300
        return
    assert 200 <= status <= 299 and isinstance(got, Embedded)
    assert got.vectors.dtype == np.float32 and got.vectors.shape[0] == expected
    assert dim is None or got.vectors.shape[1] == dim
    if expected:
        assert np.isfinite(got.vectors).all()
        np.testing.assert_allclose(np.linalg.norm(got.vectors, axis=1), 1.0, atol=1e-5)


@FUZZ
@given(body=st.binary(max_size=300), status=st.sampled_from([200, 201, 400, 429, 500, 503]), n=st.integers(0, 3))
def test_fuzz_arbitrary_bytes(body: bytes, status: int, n: int) -> None:
    for api in APIS:
        check_outcome(api, status, body, n)


@FUZZ
@given(doc=JSON, status=st.integers(100, 599), n=st.integers(0, 3))
def test_fuzz_arbitrary_json(doc: Any, status: int, n: int) -> None:
    body = json.dumps(doc).encode()
    for api in APIS:
        check_outcome(api, status, body, n)


@FUZZ
@given(
    rows=st.lists(ROW, min_size=1, max_size=4),
    order=st.permutations(range(4)),
    n=st.integers(1, 4),
    dim=st.none() | st.integers(1, 6),
    usage=JSON,
)
def test_fuzz_well_shaped_answers_with_hostile_numbers(
    rows: list[Any], order: list[int], n: int, dim: int | None, usage: Any
) -> None:
    order = [i for i in order if i < len(rows)]
    check_outcome(NIM, 200, v1_answer(rows, order, usage), n, dim)
    check_outcome(TEI, 200, json.dumps([r for r in rows if isinstance(r, list)]).encode(), n, dim)


# -- inputs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "CMYK", "I;16"])
def test_thumbnail_is_a_small_rgb_jpeg(mode: str) -> None:
    with Image.open(SKIMAGE_DATA / "astronaut.png") as im:
        image = im.convert(mode) if mode != "I;16" else im.convert("L").convert("I;16")
    jpeg = thumbnail_jpeg(image.resize((512, 300)))
    with Image.open(io.BytesIO(jpeg)) as back:
        assert back.format == "JPEG" and back.mode == "RGB" and back.size == (128, 75)
    small = thumbnail_jpeg(image.resize((40, 20)), side=128, quality=70)
    with Image.open(io.BytesIO(small)) as back:
        assert back.size == (40, 20)  # never enlarged


def test_thumbnail_quality_cuts_bytes_and_bad_settings_refuse() -> None:
    with Image.open(SKIMAGE_DATA / "chelsea.png") as im:
        image = im.convert("RGB")
    assert len(thumbnail_jpeg(image, 128, 30)) < len(thumbnail_jpeg(image, 128, 90)) < len(thumbnail_jpeg(image, 256))
    with pytest.raises(ValueError):
        thumbnail_jpeg(image, 0)
    with pytest.raises(ValueError):
        thumbnail_jpeg(image, 128, 0)


@pytest.mark.parametrize(
    "url", ["", "data:text/plain;base64,AAAA", "data:image/png,AAAA", "data:image/jpeg;base64,A", "http://x/a.jpg"]
)
def test_bad_data_urls_are_value_errors(url: str) -> None:
    with pytest.raises(ValueError):
        decode_data_url(url)


def test_token_estimate_grows_with_what_is_sent() -> None:
    assert estimate_tokens(["abcd", "abcde", ""]) == 1 + 2 + 1
    assert estimate_tokens([data_url(b"x" * 3000)]) == math.ceil((23 + 4000) / 4)


# -- settings -------------------------------------------------------------------------------------


def test_settings_defaults_are_the_seeds() -> None:
    s = RemoteSettings()
    assert (s.flavour, s.image_side, s.image_quality, s.initial_concurrency) == ("nim", 128, 70, 2)
    assert s.endpoint(s.api().build_request(["x"]).path) == "https://integrate.api.nvidia.com/v1/embeddings"
    assert s.api() == NIM


def test_settings_keep_the_key_secret() -> None:
    s = RemoteSettings(api_key="nvapi-secret-123")
    assert "nvapi-secret-123" not in repr(s) and "nvapi-secret-123" not in str(s.model_dump())
    assert s.api_key is not None and s.api_key.get_secret_value() == "nvapi-secret-123"
    with pytest.raises(ValidationError) as err:
        RemoteSettings(api_key="nvapi-secret-123", max_concurrency=0)
    assert "nvapi-secret-123" not in str(err.value)


@pytest.mark.parametrize(
    ("flavour", "url", "want"),
    [
        ("nim", "https://integrate.api.nvidia.com/v1/", "https://integrate.api.nvidia.com"),
        ("openai", "http://127.0.0.1:8000/v1", "http://127.0.0.1:8000"),
        ("tei", "http://tei:80/", "http://tei:80"),
    ],
)
def test_settings_url_drops_the_path_the_request_adds(flavour: str, url: str, want: str) -> None:
    assert RemoteSettings(flavour=flavour, url=url).url == want


@pytest.mark.parametrize(
    "changes",
    [
        {"url": "ftp://host"},
        {"url": "https://user:pw@host"},
        {"url": "https://host/?key=x"},
        {"url": "not a url"},
        {"initial_concurrency": 10, "max_concurrency": 4},
        {"flavour": "cohere"},
        {"image_quality": 0},
        {"requests_per_s": 0},
        {"unknown": 1},
    ],
)
def test_settings_refuse_nonsense(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RemoteSettings(**changes)

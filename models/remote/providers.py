"""The request and response shapes of the hosted embedding APIs mediavec calls: pure functions, no HTTP.

A remote provider is a stranger's server: every answer is validated before a vector leaves
here (count, order, dimension, finite values, size), and anything wrong is a
:class:`ProviderError` with the provider's own message, never an exception of another type.
Vectors come back as float32 unit rows (cosine), whatever the server's normalisation.

Supported shapes (:class:`ProviderApi`, one per ``flavour``):

``nim``  NVIDIA NIM embeddings, ``POST /v1/embeddings`` with
         ``{"input": [...], "model", "input_type": "query"|"passage", "encoding_format",
         "truncate": "NONE"|"START"|"END"}``. Images travel in ``input`` as data URLs
         (``data:image/jpeg;base64,...``), which NV-CLIP and the multimodal nemotron embed NIMs
         take (hosted NV-CLIP asks for images under 200 KB; a 128 px thumbnail is a few KB);
         image requests say ``input_type: "passage"``, the only type the VLM embed NIM allows
         for images. ``input_type`` and ``truncate`` are left out when unset (NV-CLIP's reference
         documents neither). Sources: docs.nvidia.com/nim/nemo-retriever/text-embedding/2.0.0/reference.html
         (request and response fields) and docs.api.nvidia.com/nim/reference/nvidia-nvclip-infer
         (image data URLs, ``float``/``base64`` encodings).
``openai`` OpenAI-compatible ``POST /v1/embeddings`` with ``{"input": [...], "model",
         "encoding_format": "float"|"base64"}`` (vLLM, Infinity, LiteLLM, Ollama's /v1 and
         others); images as data URLs where the server takes them.
``tei``  Hugging Face text-embeddings-inference ``POST /embed`` with ``{"inputs": [...],
         "normalize": true, "truncate": true}``, answered by ``[[...], ...]`` and errors by
         ``{"error", "error_type"}`` (its OpenAPI reference); text only.

``nim`` and ``openai`` answer ``{"data": [{"index": i, "embedding": [...] | "<base64>"}],
"usage": {"prompt_tokens", "total_tokens"}}``; ``base64`` embeddings are little-endian float32.
Errors are read from ``{"error": {"message"}}`` (OpenAI), ``{"error": "..."}`` (TEI),
``{"detail"}``/``{"message"}``/``{"title"}`` (NIM, FastAPI) or the body's text, as one bounded line.
Rate-limit headers are read by :mod:`models.remote.hints`, statuses classified by :mod:`models.remote.retry`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

from models.images import thumbnail_jpeg  # re-exported: what a provider is sent of an image
from models.remote.quota import estimate_text_tokens

__all__ = [
    "MAX_DIM",
    "MAX_RESPONSE_BYTES",
    "ApiRequest",
    "Embedded",
    "ErrorKind",
    "Flavour",
    "InputType",
    "ProviderApi",
    "ProviderError",
    "data_url",
    "decode_data_url",
    "error_message",
    "estimate_tokens",
    "thumbnail_jpeg",
]
logger = logging.getLogger(__name__)

Flavour = Literal["nim", "openai", "tei"]
InputType = Literal["query", "passage"]
Encoding = Literal["float", "base64"]
Truncate = Literal["NONE", "START", "END"]
MAX_RESPONSE_BYTES = 64 << 20  # 64 items x 8,192 dims x ~25 JSON bytes a float is ~13 MiB
MAX_DIM = 65_536
_MESSAGE_CHARS = 300
_DATA_URL = re.compile(r"data:(image/[A-Za-z0-9.+-]+);base64,", re.ASCII)


ErrorKind = Literal["status", "malformed", "unsupported"]


class ProviderError(Exception):
    """A provider answer that gave no usable vectors, with the provider's own message when it gave one.

    ``kind`` says which: ``status`` (a non-2xx answer; classify ``status`` with
    :func:`models.remote.retry.classify`), ``malformed`` (a 2xx whose body failed validation: a
    broken or hostile server) or ``unsupported`` (a request this flavour cannot express).
    """

    def __init__(self, message: str, *, status: int | None = None, kind: ErrorKind = "malformed") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind: ErrorKind = kind

    def __str__(self) -> str:
        return self.message if self.status is None else f"HTTP {self.status}: {self.message}"


class ApiRequest(NamedTuple):
    """What to send: ``POST <url><path>`` with ``body`` as JSON."""

    path: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Embedded:
    """A validated answer: ``vectors`` (n, dim) float32 unit rows in input order; ``tokens`` from ``usage``."""

    vectors: np.ndarray
    tokens: int | None


@dataclass(frozen=True)
class ProviderApi:
    """The shapes of one flavour for one model: build requests, validate answers."""

    flavour: Flavour
    model: str
    encoding_format: Encoding = "float"
    truncate: Truncate | None = "END"  # None: not sent (a NIM that does not document it, like NV-CLIP)

    @property
    def supports_images(self) -> bool:
        return self.flavour != "tei"

    def build_request(self, inputs: Sequence[str], input_type: InputType | None = "passage") -> ApiRequest:
        """A request embedding ``inputs`` (texts, or image data URLs) in one call; ``input_type`` is nim's."""
        if not inputs:
            raise ValueError("a request needs at least one input")
        if self.flavour == "tei":
            return ApiRequest("/embed", {"inputs": list(inputs), "normalize": True, "truncate": True})
        body: dict[str, Any] = {"input": list(inputs), "model": self.model, "encoding_format": self.encoding_format}
        if self.flavour == "nim":
            if self.truncate is not None:
                body["truncate"] = self.truncate
            if input_type is not None:
                body["input_type"] = input_type
        return ApiRequest("/v1/embeddings", body)

    def build_image_request(self, jpegs: Sequence[bytes], input_type: InputType | None = "passage") -> ApiRequest:
        """A request embedding JPEG images, sent as data URLs (stored images are passages)."""
        if not self.supports_images:
            raise ProviderError(f"the {self.flavour} API embeds text only", kind="unsupported")
        return self.build_request([data_url(jpeg) for jpeg in jpegs], input_type)

    def parse_response(
        self, status: int, body: bytes, expected: int, dim: int | None = None, max_bytes: int = MAX_RESPONSE_BYTES
    ) -> Embedded:
        """The ``expected`` vectors of an answer, in input order; raises :class:`ProviderError` for anything else.

        ``dim``, when known (the model's width, or the first answer's), is enforced too. A body over
        ``max_bytes`` is refused unparsed (the client should stop reading there, too).
        """
        if not 200 <= status <= 299:
            raise ProviderError(error_message(body, status), status=status, kind="status")
        if len(body) > max_bytes:
            raise ProviderError(f"response of {len(body)} bytes is over {max_bytes}", status=status)
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise ProviderError(f"response is not JSON: {type(exc).__name__}", status=status) from None
        if self.flavour == "tei":
            rows, tokens = _tei_rows(doc, status), None
        else:
            rows, tokens = _openai_rows(doc, status, expected), _usage_tokens(doc)
        if len(rows) != expected:
            raise ProviderError(f"{len(rows)} embeddings for {expected} inputs", status=status)
        return Embedded(_unit_rows(rows, dim, status), tokens)


def _tei_rows(doc: Any, status: int) -> list[Any]:
    if isinstance(doc, dict):
        raise ProviderError(_message_of(doc) or "an object where a list of embeddings was expected", status=status)
    if not isinstance(doc, list):
        raise ProviderError(f"a JSON {type(doc).__name__} where a list of embeddings was expected", status=status)
    return doc


def _openai_rows(doc: Any, status: int, expected: int) -> list[Any]:
    """The embeddings of ``data``, reordered by ``index``, which must be exactly 0..n-1."""
    if not isinstance(doc, dict):
        raise ProviderError(f"a JSON {type(doc).__name__} where an object was expected", status=status)
    if doc.get("error"):
        raise ProviderError(_message_of(doc) or "the response holds an error", status=status)
    data = doc.get("data")
    if not isinstance(data, list):
        raise ProviderError("the response has no 'data' list", status=status)
    if len(data) != expected:
        raise ProviderError(f"{len(data)} embeddings for {expected} inputs", status=status)
    by_index: dict[int, Any] = {}
    for item in data:
        index = item.get("index") if isinstance(item, dict) else None
        if type(index) is not int or not 0 <= index < expected or index in by_index:
            raise ProviderError(f"embedding indices are not 0..{expected - 1}, each once", status=status)
        by_index[index] = item.get("embedding")
    return [by_index[i] for i in range(expected)]


def _usage_tokens(doc: dict[str, Any]) -> int | None:
    usage = doc.get("usage")
    if not isinstance(usage, dict):
        return None
    for key in ("total_tokens", "prompt_tokens"):
        value = usage.get(key)
        if type(value) is int and 0 <= value < 1 << 53:
            return value
    return None


def _row(raw: Any) -> np.ndarray | None:
    """One embedding as float64: a list of JSON numbers, or base64 little-endian float32; None if neither."""
    if isinstance(raw, str):
        try:
            packed = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            return None
        return np.frombuffer(packed, dtype="<f4").astype(np.float64) if len(packed) % 4 == 0 else None
    if not isinstance(raw, list) or not all(type(x) is float or type(x) is int for x in raw):
        return None  # bools, strings, nulls, nested lists: not a vector
    try:
        return np.asarray(raw, dtype=np.float64)
    except OverflowError:  # an integer past float64
        return None


def _unit_rows(rows: list[Any], dim: int | None, status: int) -> np.ndarray:
    """Validate widths and values, then L2-normalise (scaled first, so huge finite values cannot overflow)."""
    if not rows:
        return np.zeros((0, dim or 0), dtype=np.float32)
    vectors = []
    for raw in rows:
        row = _row(raw)
        if row is None:
            raise ProviderError("an embedding is not a list of numbers or base64 float32", status=status)
        vectors.append(row)
    width = dim if dim is not None else len(vectors[0])
    if not 1 <= width <= MAX_DIM or any(len(v) != width for v in vectors):
        got = sorted({len(v) for v in vectors})
        raise ProviderError(f"embedding widths {got[:4]} where {width} (1..{MAX_DIM}) was expected", status=status)
    matrix = np.stack(vectors)
    if not np.isfinite(matrix).all():
        raise ProviderError("an embedding holds NaN or infinity", status=status)
    scale = np.abs(matrix).max(axis=1, keepdims=True)
    if (scale == 0).any():
        raise ProviderError("an embedding is all zeros", status=status)
    matrix = matrix / scale
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix.astype(np.float32)


def _message_of(doc: Any) -> str | None:
    """The provider's own words in an error document, in the shapes OpenAI, TEI, NIM and FastAPI use."""
    if not isinstance(doc, dict):
        return None
    error = doc.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    candidates = [error, doc.get("message"), doc.get("detail"), doc.get("title")]
    for value in candidates:
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, list) and value and isinstance(value[0], dict) and isinstance(value[0].get("msg"), str):
            return "; ".join(str(v.get("msg")) for v in value[:3] if isinstance(v, dict))
    return None


def error_message(body: bytes, status: int | None = None) -> str:
    """A one-line, bounded, printable message for an error answer: the provider's words when it gave any."""
    text: str | None = None
    if len(body) <= MAX_RESPONSE_BYTES:
        try:
            text = _message_of(json.loads(body))
        except (ValueError, RecursionError):
            text = None
    if text is None:
        text = body[: _MESSAGE_CHARS * 4].decode("utf-8", "replace")
    line = " ".join("".join(c if c.isprintable() else " " for c in text).split())[:_MESSAGE_CHARS]
    return line or (f"HTTP {status} with an empty body" if status is not None else "an empty answer")


# -- inputs ---------------------------------------------------------------------------------------


def estimate_tokens(inputs: Sequence[str]) -> int:
    """Tokens a request costs: :func:`models.remote.quota.estimate_text_tokens` of each input, at least 1.

    A data URL counts its characters, so a smaller thumbnail costs fewer tokens, as it does at the
    hosted APIs. Providers bill by their own tokenizer and say so in ``usage``; this is the
    estimate a client budgets its tokens per minute with, and what the stand-in provider bills.
    """
    return sum(max(1, estimate_text_tokens(item)) for item in inputs)


def data_url(image: bytes, mime: str = "image/jpeg") -> str:
    """``data:<mime>;base64,<image>``: how the NIM and OpenAI-compatible APIs take an image in ``input``."""
    return f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"


def decode_data_url(url: str) -> bytes:
    """The bytes of a ``data:image/...;base64,`` URL; ValueError with a one-line reason otherwise."""
    match = _DATA_URL.match(url)
    if match is None:
        raise ValueError("not a base64 image data URL (data:image/<type>;base64,...)")
    try:
        return base64.b64decode(url[match.end() :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the data URL's base64 payload is malformed") from None

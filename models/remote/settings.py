"""Settings of a remote embedding provider: where it is, which API shape it speaks, how hard to push it.

The API key is a ``SecretStr``: it prints as ``**********``, settings errors never echo it, and
only the HTTP client reads it (``api_key.get_secret_value()``) to set ``Authorization``.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator, model_validator

from models.remote.providers import MAX_RESPONSE_BYTES, ProviderApi
from streams.settings import SECTION


class ProviderSettingsError(ValueError):
    """The provider's settings cannot do what the configured spaces ask (e.g. a text-only API for images)."""


class RemoteSettings(BaseModel):
    """One hosted (or self-hosted) embedding API; see :mod:`models.remote.providers` for the shapes."""

    model_config = SECTION
    flavour: Literal["nim", "openai", "tei"] = Field(
        "nim", description="API shape: nim (NVIDIA NIM), openai (OpenAI-compatible /v1/embeddings), tei (HF TEI)."
    )
    url: str = Field(
        "https://integrate.api.nvidia.com",
        description="Base URL; the flavour's path (/v1/embeddings, /embed) is added.",
    )
    model: str = Field("nvidia/nvclip", description="The provider's model id (nim and openai send it).")
    api_key: SecretStr | None = Field(None, description="Sent as 'Authorization: Bearer <key>'; never logged.")
    image_side: int = Field(
        128, ge=16, le=2048, description="Images are sent as JPEGs at most this many pixels a side."
    )
    image_quality: int = Field(70, ge=1, le=95, description="JPEG quality of the images sent.")
    batch_size: int = Field(16, ge=1, le=1024, description="Items per request (every flavour takes lists).")
    max_concurrency: int = Field(64, ge=1, le=4096, description="Ceiling of the adaptive concurrency limit.")
    initial_concurrency: int = Field(2, ge=1, description="Where the adaptive concurrency limit starts.")
    requests_per_s: float | None = Field(None, gt=0, description="Request quota; unset: unlimited.")
    tokens_per_min: int | None = Field(None, gt=0, description="Token quota (usage or estimate); unset: unlimited.")
    timeout_s: float = Field(30.0, gt=0, le=600, description="Deadline of one request, connect to last byte.")
    max_retries: int = Field(5, ge=0, le=100, description="Retries of a retriable failure (429, 5xx, timeout).")
    query_input_type: Literal["query", "passage"] | None = Field(
        "query", description="nim input_type of search queries; null: not sent."
    )
    passage_input_type: Literal["query", "passage"] | None = Field(
        "passage", description="nim input_type of stored images and texts; null: not sent."
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="How nim/openai return vectors: JSON floats or base64 float32 (smaller)."
    )
    truncate: Literal["NONE", "START", "END"] | None = Field(
        "END", description="nim: how over-long text is cut; null: not sent."
    )
    store_dim: int | None = Field(
        None,
        ge=8,
        description="Stored dimension: truncate and renormalise; only for models trained for it (Matryoshka). "
        "Unset keeps the provider's width.",
    )
    max_response_bytes: int = Field(
        MAX_RESPONSE_BYTES, ge=1024, le=MAX_RESPONSE_BYTES, description="Bigger answers are refused unread."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str, info: ValidationInfo) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the provider URL must be http:// or https:// with a host")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("the provider URL takes no query, fragment or credentials (use api_key)")
        url = url.rstrip("/")
        if info.data.get("flavour") in ("nim", "openai") and url.endswith("/v1"):
            url = url[: -len("/v1")]  # the docs' base URLs end in /v1; the request path carries it
        return url

    def api(self) -> ProviderApi:
        """The request and response shapes these settings speak."""
        return ProviderApi(self.flavour, self.model, self.encoding_format, self.truncate)

    def endpoint(self, path: str) -> str:
        """The URL of an API path (:attr:`models.remote.providers.ApiRequest.path`)."""
        return self.url + path

    @model_validator(mode="after")
    def _concurrency_order(self) -> RemoteSettings:
        if self.initial_concurrency > self.max_concurrency:
            raise ValueError(
                f"initial_concurrency {self.initial_concurrency} is over max_concurrency {self.max_concurrency}"
            )
        return self


def remote_model_id(settings: RemoteSettings) -> str:
    """The model id of a remote provider's vectors: ``remote/<flavour>/<model, / as :>``."""
    return f"remote/{settings.flavour}/{settings.model.replace('/', ':')}"

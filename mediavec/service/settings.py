"""Settings of the search service, ``MEDIAVEC_SERVE__<FIELD>``; composed into :class:`mediavec.settings.Settings`."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

from streams.settings import SECTION

MIB = 1024 * 1024


class ServeSettings(BaseModel):
    """Where ``mediavec serve`` listens and what it lets in."""

    model_config = SECTION
    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0: every interface).")
    port: int = Field(8080, ge=0, le=65535, description="TCP port to listen on.")
    api_key: SecretStr | None = Field(
        None,
        description="When set, every endpoint but the page (/, /page/*), /healthz, /readyz and /openapi.json "
        "asks for it (Authorization: Bearer <key>, or X-API-Key: <key>).",
    )
    max_request_bytes: int = Field(8 * MIB, ge=1024, description="Largest request body; more is refused with 413.")
    cors_origins: tuple[str, ...] = Field(
        (), description="Browser origins allowed to call the API (CORS); empty: CORS off."
    )
    thumbnails: bool = Field(
        True,
        description="Link each hit to its frame's thumbnail, read from PostgreSQL (sink-postgres keeps them).",
    )

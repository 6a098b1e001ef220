"""The service's contract: request and response models, and the table of endpoints.

The table is the one place an endpoint is declared: :mod:`mediavec.service.app` routes from it and
:mod:`mediavec.service.openapi` documents it, so the document cannot drift from the routes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mediavec.search import SPACE_CHOICES
from schemas.limits import COLLECTION_RE
from stores.vectorstore import Hit

COLLECTION_PATTERN = f"^{COLLECTION_RE.pattern}$"
MAX_LIMIT = 100
MAX_OFFSET = 1000  # a search reads offset + limit hits of every space it covers
MAX_TEXT = 2000  # characters; the text towers read far fewer tokens than this

StoreParam = Literal["auto", "qdrant", "encrypted", "all"]
_STRICT = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class SearchOptions(BaseModel):
    """Where to search and which page of the merged hits to return."""

    model_config = _STRICT
    collection: str = Field("default", pattern=COLLECTION_PATTERN, description="Collection or alias.")
    space: str = Field(
        "scene",
        description="Vector space; all: every space that fits the query, merged by score.",
        json_schema_extra={"enum": list(SPACE_CHOICES)},
    )
    limit: int = Field(10, ge=1, le=MAX_LIMIT, description="Hits on this page.")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="Hits to skip: the page starts there.")
    per_space: int | None = Field(
        None, ge=1, le=MAX_LIMIT + MAX_OFFSET, description="At most this many hits of any one space."
    )
    store: StoreParam = Field(
        "auto", description="auto: Qdrant, plus the encrypted index when its key is configured; all: both."
    )

    @field_validator("space")
    @classmethod
    def _known_space(cls, space: str) -> str:
        # checked here rather than typed as a union of Literals, whose errors name each member
        if space not in SPACE_CHOICES:
            raise ValueError(f"unknown space {space[:32]!r}: one of {', '.join(SPACE_CHOICES)}")
        return space


class TextSearch(SearchOptions):
    """``POST /v1/search``: a text query."""

    text: str = Field(min_length=1, max_length=MAX_TEXT, description="What to look for, in words.")


class ImageSearch(SearchOptions):
    """``POST /v1/search/image``: the query parameters; the image is the body."""


class HitOut(BaseModel):
    """One stored frame, object, text or face that matched, as the sinks stored it."""

    id: str = Field(description="Point id (stable across replays).")
    score: float = Field(description="Cosine similarity to the query.")
    media_id: str | None = None
    frame_index: int | None = None
    timestamp_s: float | None = Field(None, description="Time of the frame within its video.")
    box: list[float] | None = Field(None, description="x0, y0, x1, y1 in frame pixels (objects, grid cells, faces).")
    label: str | None = None
    space: str | None = None
    source_url: str | None = None
    collection: str | None = None
    model: str | None = Field(None, description="Id of the model that made the vector.")

    @classmethod
    def of(cls, hit: Hit) -> HitOut:
        p = hit.payload
        return cls(id=hit.id, score=hit.score, **{name: p.get(name) for name in _PAYLOAD_FIELDS})


_PAYLOAD_FIELDS = tuple(name for name in HitOut.model_fields if name not in ("id", "score"))


class SearchResult(BaseModel):
    """One page of hits, best first."""

    hits: list[HitOut]
    offset: int
    limit: int
    next_offset: int | None = Field(description="Offset of the next page; null when this page is the last.")


class SpaceRow(BaseModel):
    """One space of one physical collection."""

    collection: str
    model: str | None
    space: str
    count: int
    dim: int


class Layout(BaseModel):
    """The models and spaces stored for a collection (or alias)."""

    collection: str
    spaces: list[SpaceRow]


class Status(BaseModel):
    status: str


class ErrorOut(BaseModel):
    """Every error: one line that says what was wrong."""

    error: str


@dataclass(frozen=True)
class Endpoint:
    """One route: what it takes, what it answers, and which errors it can give."""

    name: str  # the handler in mediavec.service.app
    method: str
    path: str
    summary: str
    query: type[BaseModel] | None = None
    body: Literal["json", "image"] | None = None
    body_model: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    response_type: str = "application/json"
    errors: tuple[int, ...] = ()
    public: bool = False  # answered without the API key
    path_params: dict[str, dict[str, Any]] = field(default_factory=dict)


_SEARCH_ERRORS = (400, 401, 404, 413, 503)
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("healthz", "GET", "/healthz", "The process is alive.", response=Status, public=True),
    Endpoint("readyz", "GET", "/readyz", "The vector store can be read.", response=Status, errors=(503,), public=True),
    Endpoint("metrics", "GET", "/metrics", "Prometheus metrics.", response_type="text/plain", errors=(401,)),
    Endpoint("openapi", "GET", "/openapi.json", "This document.", public=True),
    Endpoint(
        "search_text", "POST", "/v1/search", "Search by text.",
        body="json", body_model=TextSearch, response=SearchResult, errors=_SEARCH_ERRORS,
    ),
    Endpoint(
        "search_image", "POST", "/v1/search/image",
        "Search by image: the raw image as the body, or a multipart form with a file field named image.",
        query=ImageSearch, body="image", response=SearchResult, errors=_SEARCH_ERRORS,
    ),
    Endpoint(
        "spaces", "GET", "/v1/collections/{name}/spaces", "The models and vector spaces stored for a collection.",
        response=Layout, errors=(400, 401, 404, 503),
        path_params={"name": {"type": "string", "pattern": COLLECTION_PATTERN}},
    ),
)  # fmt: skip

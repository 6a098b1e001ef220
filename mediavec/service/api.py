"""The service's contract: request and response models, and the table of endpoints.

The table is the one place an endpoint is declared: :mod:`mediavec.service.app` routes from it and
:mod:`mediavec.service.openapi` documents it, so the document cannot drift from the routes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mediavec.search import SPACE_CHOICES
from schemas.limits import COLLECTION_RE
from schemas.limits import MAX_TEXT as MAX_URL
from stores.vectorstore import Hit, SearchFilter
from stores.vectorstore.filters import MAX_FILTER_VALUES, MAX_META_CONDITIONS, META_KEY_RE

COLLECTION_PATTERN = f"^{COLLECTION_RE.pattern}$"
MAX_LIMIT = 100
MAX_OFFSET = 1000  # a search reads offset + limit hits of every space it covers
MAX_TEXT = 2000  # characters; the text towers read far fewer tokens than this
MAX_MEDIA_ID = 256  # as media_request/v1.schema.json allows
MAX_SECONDS = 10**7  # a time bound within a video (about 116 days)
UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

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


class HitFilter(BaseModel):
    """Conditions every hit must meet (all of them; a list matches any of its values)."""

    model_config = _STRICT
    media_ids: list[Annotated[str, Field(min_length=1, max_length=MAX_MEDIA_ID)]] = Field(
        [], max_length=MAX_FILTER_VALUES, description="Only these media."
    )
    labels: list[str] = Field([], max_length=MAX_FILTER_VALUES, description="Only hits with one of these labels.")
    time_from_s: float | None = Field(None, ge=0, le=MAX_SECONDS, description="Frames at or after this time.")
    time_to_s: float | None = Field(None, ge=0, le=MAX_SECONDS, description="Frames at or before this time.")
    metadata: dict[str, str] = Field(
        {},
        max_length=MAX_META_CONDITIONS,
        description=f"Request metadata values the media must have; keys match {META_KEY_RE.pattern}.",
        json_schema_extra={"propertyNames": {"pattern": f"^{META_KEY_RE.pattern}$"}},
    )

    @field_validator("metadata")
    @classmethod
    def _keys(cls, metadata: dict[str, str]) -> dict[str, str]:
        for key in metadata:
            if not META_KEY_RE.fullmatch(key):
                raise ValueError(f"metadata key {key[:70]!r} must match {META_KEY_RE.pattern}")
        return metadata

    def to_filter(self) -> SearchFilter | None:
        where = SearchFilter(
            media_ids=tuple(self.media_ids),
            labels=tuple(self.labels),
            time_from_s=self.time_from_s,
            time_to_s=self.time_to_s,
            meta=tuple(self.metadata.items()),
        )
        return where if where else None


class FilteredSearch(SearchOptions):
    """Options with a filter, for the queries that come as JSON."""

    filter: HitFilter | None = Field(None, description="Conditions every hit must meet.")

    def where(self) -> SearchFilter | None:
        return self.filter.to_filter() if self.filter else None


class TextSearch(FilteredSearch):
    """``POST /v1/search``: a text query."""

    text: str = Field(min_length=1, max_length=MAX_TEXT, description="What to look for, in words.")


class UrlSearch(FilteredSearch):
    """``POST /v1/search/url``: the image at a URL, fetched as the fetch stage fetches media."""

    url: str = Field(min_length=1, max_length=MAX_URL, description="An http(s) URL of an image.")


class SimilarSearch(FilteredSearch):
    """``POST /v1/search/similar``: more like a stored point, searched with its own vector."""

    id: str = Field(pattern=UUID_PATTERN, description="Point id of a hit.")
    space: str | None = Field(  # type: ignore[assignment]
        None,
        description="Vector space; default: the point's own; all: every space of its collection.",
        json_schema_extra={"enum": [*SPACE_CHOICES, None]},
    )

    @field_validator("space")
    @classmethod
    def _known_space(cls, space: str | None) -> str | None:  # type: ignore[override]  # replaces the parent's
        if space is not None and space not in SPACE_CHOICES:
            raise ValueError(f"unknown space {space[:32]!r}: one of {', '.join(SPACE_CHOICES)}")
        return space


class ImageSearch(SearchOptions):
    """``POST /v1/search/image``: the query parameters (a filter in flat form); the image is the body."""

    media_id: str | None = Field(None, min_length=1, max_length=MAX_MEDIA_ID, description="Only this media.")
    label: str | None = Field(None, max_length=MAX_TEXT, description="Only hits with this label.")
    time_from_s: float | None = Field(None, ge=0, le=MAX_SECONDS, description="Frames at or after this time.")
    time_to_s: float | None = Field(None, ge=0, le=MAX_SECONDS, description="Frames at or before this time.")

    def where(self) -> SearchFilter | None:
        where = SearchFilter(
            media_ids=(self.media_id,) if self.media_id is not None else (),
            labels=(self.label,) if self.label is not None else (),
            time_from_s=self.time_from_s,
            time_to_s=self.time_to_s,
        )
        return where if where else None


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
    frame_width: int | None = Field(None, description="Width of the frame in pixels (the space of box).")
    frame_height: int | None = Field(None, description="Height of the frame in pixels.")
    thumbnail_url: str | None = Field(None, description="A small JPEG of the whole frame, when thumbnails are kept.")

    @classmethod
    def of(cls, hit: Hit, thumbnails: bool = False) -> HitOut:
        p = hit.payload
        fields = {name: p.get(name) for name in _PAYLOAD_FIELDS}
        media, frame = p.get("media_id"), p.get("frame_index")
        if thumbnails and isinstance(media, str) and isinstance(frame, int):
            fields["thumbnail_url"] = f"/v1/thumbnail?{urlencode({'media_id': media, 'frame_index': frame})}"
        return cls(id=hit.id, score=hit.score, **fields)


_PAYLOAD_FIELDS = tuple(name for name in HitOut.model_fields if name not in ("id", "score", "thumbnail_url"))


class SearchResult(BaseModel):
    """One page of hits, best first."""

    hits: list[HitOut]
    offset: int
    limit: int
    next_offset: int | None = Field(description="Offset of the next page; null when this page is the last.")


class ThumbnailQuery(BaseModel):
    """``GET /v1/thumbnail``: which frame."""

    model_config = _STRICT
    media_id: str = Field(min_length=1, max_length=MAX_MEDIA_ID)
    frame_index: int = Field(ge=0, le=2**31 - 1)


class CollectionRow(BaseModel):
    """One request collection or alias, with its stored points over every model and space."""

    name: str
    points: int
    alias_of: str | None = Field(None, description="The physical collection an alias points to.")


class Collections(BaseModel):
    collections: list[CollectionRow]


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
        "search_url", "POST", "/v1/search/url",
        "Search by the image at a URL, fetched through the fetch stage's address guard and limits.",
        body="json", body_model=UrlSearch, response=SearchResult, errors=(*_SEARCH_ERRORS, 422),
    ),
    Endpoint(
        "search_similar", "POST", "/v1/search/similar",
        "More like this: search with a stored point's own vector (the point itself left out).",
        body="json", body_model=SimilarSearch, response=SearchResult, errors=_SEARCH_ERRORS,
    ),
    Endpoint(
        "thumbnail", "GET", "/v1/thumbnail", "A small JPEG of a stored frame (hits link to it).",
        query=ThumbnailQuery, response_type="image/jpeg", errors=(400, 401, 404, 503),
    ),
    Endpoint(
        "collections", "GET", "/v1/collections", "The request collections and aliases with their stored points.",
        response=Collections, errors=(401, 503),
    ),
    Endpoint(
        "spaces", "GET", "/v1/collections/{name}/spaces", "The models and vector spaces stored for a collection.",
        response=Layout, errors=(400, 401, 404, 503),
        path_params={"name": {"type": "string", "pattern": COLLECTION_PATTERN}},
    ),
)  # fmt: skip

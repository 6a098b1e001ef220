"""Size and shape limits of every event, declared once (schemas/README.md documents them).

A request's ``metadata`` and ``options`` are copied into every frame, vector batch and stored
payload, so they are bounded here rather than by the broker's message size: a 2 MB metadata map
would otherwise ride along with each of a video's frames. The checks are pure and raise
:class:`SchemaError`, so producers (``mediavec publish``) and consumers refuse the same things.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np


class SchemaError(ValueError):
    """Bytes that do not decode as the expected event (a DLQ cause, never retried)."""


MAX_REQUEST_BYTES = 64 * 1024  # one media_request event, as published
MAX_METADATA_BYTES = 16 * 1024  # a request's (and so a frame's) metadata, as compact JSON
MAX_METADATA_ENTRIES = 64
MAX_OPTIONS_BYTES = 16 * 1024  # a request's options, as compact JSON
MAX_JSON_DEPTH = 8  # nesting of objects and arrays in a request (the request itself is level 1)
MAX_DIM = 8192  # vector width
MAX_ROWS = 4096  # vectors in one batch (one frame of one model)
MAX_TEXT = 4096  # a row's label, a source URL, a model id
MAX_FRAME_SIDE = 8192  # a vector batch's frame_width and frame_height, in pixels
MAX_THUMBNAIL_BYTES = 64 * 1024  # a vector batch's thumbnail JPEG (128 px at quality 70 is a few KiB)
JPEG_MAGIC = b"\xff\xd8"  # start of image: what a thumbnail must begin with to be served as image/jpeg
COLLECTION_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def compact_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON (how the limits above are measured)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion (a scalar is 0)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((c, depth + 1) for c in children)
    return deepest


def check_request_limits(doc: Mapping[str, Any], raw_size: int | None = None) -> None:
    """Refuse a request document over a size or nesting limit."""
    if raw_size is not None and raw_size > MAX_REQUEST_BYTES:
        raise SchemaError(f"media request is {raw_size} bytes, over the limit of {MAX_REQUEST_BYTES}")
    depth = json_depth(dict(doc))
    if depth > MAX_JSON_DEPTH:
        raise SchemaError(f"media request nests {depth} levels deep, over the limit of {MAX_JSON_DEPTH}")
    metadata = doc.get("metadata")
    if isinstance(metadata, dict):  # anything else is the schema's to refuse, with its message
        check_metadata(metadata)
    options = doc.get("options") or {}
    if compact_size(options) > MAX_OPTIONS_BYTES:
        raise SchemaError(f"media request invalid at options: over the limit of {MAX_OPTIONS_BYTES} bytes")


def check_metadata(metadata: Mapping[str, Any]) -> None:
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise SchemaError(f"metadata has {len(metadata)} entries, over the limit of {MAX_METADATA_ENTRIES}")
    size = compact_size(dict(metadata))
    if size > MAX_METADATA_BYTES:
        raise SchemaError(f"metadata is {size} bytes, over the limit of {MAX_METADATA_BYTES}")


def check_collection(collection: str) -> None:
    if not COLLECTION_RE.fullmatch(collection):
        raise SchemaError(f"collection {collection[:64]!r} is not [A-Za-z0-9_-]{{1,64}}")


def check_options_json(text: str) -> None:
    """A frame's ``options_json``: a JSON object within the options limits."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_OPTIONS_BYTES:
        raise SchemaError(f"options_json over the limit of {MAX_OPTIONS_BYTES} bytes")
    try:
        options = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise SchemaError(f"options_json is not JSON: {type(exc).__name__}") from exc
    if not isinstance(options, dict) or json_depth(options) > MAX_JSON_DEPTH - 1:
        raise SchemaError("options_json is not a JSON object within the nesting limit")


def check_vector_batch(
    model: str, collection: str, dim: int, vectors: Any, rows: list[dict[str, Any]], metadata: Mapping[str, str]
) -> None:
    """What every sink relies on: a sane width, finite unit-scale vectors, UUID point ids, 4-number boxes."""
    if not 0 < dim <= MAX_DIM:
        raise SchemaError(f"vector width {dim} outside 1..{MAX_DIM}")
    if len(rows) > MAX_ROWS:
        raise SchemaError(f"{len(rows)} rows in one batch, over the limit of {MAX_ROWS}")
    check_collection(collection)
    if not model or len(model) > MAX_TEXT:
        raise SchemaError("model id empty or too long")
    if rows and not bool(np.isfinite(vectors).all()):
        raise SchemaError("the batch holds NaN or infinite vector components")
    check_metadata(metadata)
    for row in rows:
        _check_row(row)


def _check_row(row: Mapping[str, Any]) -> None:
    try:
        canonical = str(uuid.UUID(row["point_id"])) == row["point_id"]
    except (ValueError, TypeError, AttributeError):
        canonical = False
    if not canonical:
        raise SchemaError(f"point id {str(row['point_id'])[:64]!r} is not a UUID in canonical form")
    numbers = [row.get("timestamp_s"), row.get("score")]
    if not all(v is None or math.isfinite(v) for v in numbers):
        raise SchemaError(f"point {row['point_id']}: timestamp or score is not a finite number")
    box = row.get("box")
    if box is not None and (len(box) != 4 or not all(math.isfinite(v) for v in box)):
        raise SchemaError(f"point {row['point_id']}: box must be 4 finite numbers")
    if len(row.get("label") or "") > MAX_TEXT or not row.get("media_id"):
        raise SchemaError(f"point {row['point_id']}: empty media id or label over {MAX_TEXT} characters")


def check_frame_view(width: int, height: int, thumbnail: bytes | None) -> None:
    """A vector batch's frame size (both 0: unknown, else both 1..MAX_FRAME_SIDE) and its thumbnail JPEG."""
    sides_ok = all(0 < v <= MAX_FRAME_SIDE for v in (width, height)) or width == height == 0
    if not sides_ok:
        raise SchemaError(f"frame size {width}x{height} outside 1..{MAX_FRAME_SIDE} (or 0x0 for unknown)")
    if thumbnail is None:
        return
    if len(thumbnail) > MAX_THUMBNAIL_BYTES:
        raise SchemaError(f"thumbnail is {len(thumbnail)} bytes, over the limit of {MAX_THUMBNAIL_BYTES}")
    if not thumbnail.startswith(JPEG_MAGIC):
        raise SchemaError("thumbnail is not a JPEG (no FF D8 start-of-image marker)")

"""Serialisation of every event, driven by the schema files beside this module.

media.requests carries UTF-8 JSON validated against ``media_request/v1.schema.json``.
The internal topics carry Avro in the *single-object encoding* of the Avro specification:
two marker bytes ``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint of the schema's
parsing canonical form, then the Avro binary body. Any Avro library can read them; the
fingerprint says which schema version wrote the bytes.

Optionally (:func:`use_registry`, set up by :mod:`streams.registry`) they are framed in the
Confluent wire format instead: byte ``00``, the 4-byte big-endian id a schema registry gave the
schema, then the same Avro body, which Kafka Connect, ksqlDB and the registry-aware clients of
other languages read. Decoding takes either framing, whatever the writer chose.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
import jsonschema
import numpy as np
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.limits import (
    MAX_REQUEST_BYTES,
    SchemaError,
    check_collection,
    check_frame_view,
    check_metadata,
    check_options_json,
    check_request_limits,
    check_vector_batch,
)
from schemas.models import DeadLetter, Frame, Header, MediaRequest, VectorBatch, VectorRow

SCHEMA_DIR = Path(__file__).resolve().parent
MARKER = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
CONFLUENT_HEADER = 5  # magic byte and the 4-byte schema id
MAX_UNKNOWN_IDS = 1024  # schema ids a registry did not resolve, remembered so garbage costs one lookup each


@cache
def request_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / "media_request" / "v1.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


# The version each event is written in. Every earlier version still decodes: its fingerprint picks
# the writer schema and Avro schema resolution fills the newer fields with their defaults.
CURRENT_VERSION = {"frame": 1, "vector_batch": 2, "dead_letter": 2}


def schema_text(name: str, version: int | None = None) -> str:
    """The Avro schema file of ``name`` at ``version`` (default: current), as written: what a registry gets."""
    return (SCHEMA_DIR / name / f"v{version or CURRENT_VERSION[name]}.avsc").read_text()


@cache
def avro_schema(name: str, version: int | None = None) -> tuple[Any, bytes]:
    """Parsed Avro schema and its 8-byte fingerprint, for ``name`` (frame, ...) at ``version`` (default: current)."""
    raw = json.loads(schema_text(name, version))
    parsed = fastavro.parse_schema(raw)
    fp = int(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"), 16)
    return parsed, struct.pack("<Q", fp)


@cache
def _writer_schemas(name: str) -> dict[bytes, Any]:
    """Fingerprint -> parsed schema, for every version of ``name`` this code can read."""
    versions = (avro_schema(name, v) for v in range(1, CURRENT_VERSION[name] + 1))
    return {fp: parsed for parsed, fp in versions}


class _Registry:
    """The Confluent framing in use: the id each event is written under, and the schemas known by id."""

    def __init__(self) -> None:
        self.write_ids: dict[str, int] = {}  # event name -> id; empty: write the single-object encoding
        self.by_id: dict[int, Any] = {}  # id -> parsed writer schema
        self.unknown: set[int] = set()
        self.resolve: Callable[[int], str] | None = None  # id -> the schema's JSON text, from the registry


_registry = _Registry()


def use_registry(write_ids: Mapping[str, int], resolve: Callable[[int], str] | None) -> None:
    """Write each event named in ``write_ids`` in the Confluent framing under its id (none named:
    the single-object encoding), and read Confluent-framed events by asking ``resolve`` for
    schemas of ids not seen yet. Process-wide: one worker talks to one registry."""
    _registry.write_ids = dict(write_ids)
    _registry.by_id = {i: avro_schema(name)[0] for name, i in write_ids.items()}
    _registry.unknown.clear()
    _registry.resolve = resolve


def _registered_schema(name: str, schema_id: int) -> Any:
    """The writer schema registered under ``schema_id``; a SchemaError if there is none."""
    known = _registry.by_id.get(schema_id)
    if known is not None:
        return known
    if _registry.resolve is None:
        raise SchemaError(f"{name} event framed for a schema registry (schema id {schema_id}); none is configured")
    if schema_id in _registry.unknown:
        raise SchemaError(f"{name} event names schema id {schema_id}, which the registry does not have")
    try:
        parsed = fastavro.parse_schema(json.loads(_registry.resolve(schema_id)))
    except LookupError:
        if len(_registry.unknown) < MAX_UNKNOWN_IDS:
            _registry.unknown.add(schema_id)
        raise SchemaError(f"{name} event names schema id {schema_id}, which the registry does not have") from None
    except (ValueError, TypeError, fastavro.schema.SchemaParseException) as exc:
        raise SchemaError(f"schema id {schema_id} is not an Avro schema: {_cut(str(exc))}") from None
    _registry.by_id[schema_id] = parsed
    return parsed


def _encode(name: str, record: dict[str, Any]) -> bytes:
    parsed, fp = avro_schema(name)
    buf = io.BytesIO()
    schema_id = _registry.write_ids.get(name)
    buf.write(MARKER + fp if schema_id is None else CONFLUENT_MAGIC + struct.pack(">I", schema_id))
    fastavro.schemaless_writer(buf, parsed, record)
    return buf.getvalue()


def _writer_of(name: str, data: bytes) -> tuple[Any, int]:
    """The schema that wrote ``data`` and where its Avro body starts, from either framing."""
    if len(data) >= CONFLUENT_HEADER and data[:1] == CONFLUENT_MAGIC:
        return _registered_schema(name, struct.unpack(">I", data[1:CONFLUENT_HEADER])[0]), CONFLUENT_HEADER
    if len(data) < 10 or data[:2] != MARKER:
        raise SchemaError(f"not an Avro single-object {name} event (bad marker)")
    writer = _writer_schemas(name).get(data[2:10])
    if writer is None:
        raise SchemaError(f"unknown {name} schema fingerprint {data[2:10].hex()} (written by a newer mediavec?)")
    return writer, 10


def _decode(name: str, data: bytes) -> dict[str, Any]:
    reader, _ = avro_schema(name)
    writer, body = _writer_of(name, data)
    try:
        record = fastavro.schemaless_reader(io.BytesIO(data[body:]), writer, reader)
    except Exception as exc:  # fastavro raises several types on garbage bytes (MemoryError on a huge length)
        raise SchemaError(f"corrupt {name} event: {_cut(f'{type(exc).__name__}: {exc}')}") from None
    if not isinstance(record, dict):
        raise SchemaError(f"corrupt {name} event")
    return record


# -- media request (JSON) --------------------------------------------------------------------


def encode_request(req: MediaRequest) -> bytes:
    doc = {k: v for k, v in asdict(req).items() if v is not None}
    doc = {"schema_version": 1, **doc}
    for key, default in (("options", {}), ("metadata", {}), ("run_id", ""), ("reprocess", False)):
        if doc.get(key) == default:
            doc.pop(key)
    check_request(doc)
    data = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    check_request_limits(doc, len(data))
    return data


def check_request(doc: Any) -> None:
    """Validate a parsed request against the JSON Schema and the limits; SchemaError says where."""
    if not isinstance(doc, dict):
        raise SchemaError(f"media request is a JSON {type(doc).__name__}, not an object")
    check_request_limits(doc)  # first: the nesting limit keeps the validator's recursion shallow
    errors = sorted(request_validator().iter_errors(doc), key=lambda e: [str(p) for p in e.path])
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "(root)"
        raise SchemaError(f"media request invalid at {where}: {_cut(errors[0].message)}")
    if doc["kind"] == "video" and "end_s" in doc and doc["end_s"] <= doc.get("start_s", 0):
        raise SchemaError("media request invalid: end_s must be after start_s")


def decode_request(data: bytes) -> MediaRequest:
    """The request in ``data``; anything else (whatever a stranger may publish) is a SchemaError."""
    if len(data) > MAX_REQUEST_BYTES:
        raise SchemaError(f"media request is {len(data)} bytes, over the limit of {MAX_REQUEST_BYTES}")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SchemaError(f"media request is not UTF-8 JSON: {_cut(str(exc) or type(exc).__name__)}") from None
    check_request(doc)
    doc.pop("schema_version")
    return MediaRequest(**doc)


def _cut(text: str, limit: int = 200) -> str:
    """A message that quotes input stays readable: at most ``limit`` characters."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- frame ------------------------------------------------------------------------------------


def encode_frame(frame: Frame) -> bytes:
    return _encode("frame", asdict(frame))


def decode_frame(data: bytes) -> Frame:
    record = _decode("frame", data)
    check_collection(record["collection"])
    check_metadata(record["metadata"])
    check_options_json(record["options_json"])
    return Frame(**record)


# -- vector batch -----------------------------------------------------------------------------


def encode_vector_batch(batch: VectorBatch) -> bytes:
    rows = [{**asdict(r), "box": list(r.box) if r.box is not None else None} for r in batch.rows]
    record = {
        "model": batch.model,
        "dim": batch.dim,
        "dtype": "float16",
        "vectors": np.ascontiguousarray(batch.vectors, dtype="<f2").tobytes(),
        "rows": rows,
        "source_url": batch.source_url,
        "collection": batch.collection,
        "content_sha256": batch.content_sha256,
        "metadata": dict(batch.metadata),
        "run_id": batch.run_id,
        "published_at": batch.published_at,
        "frame_width": batch.frame_width,
        "frame_height": batch.frame_height,
        "thumbnail": batch.thumbnail,
    }
    return _encode("vector_batch", record)


def decode_vector_batch(data: bytes) -> VectorBatch:
    rec = _decode("vector_batch", data)
    dim, raw, rows_in = rec["dim"], rec["vectors"], rec["rows"]
    if dim <= 0 or len(raw) != 2 * dim * len(rows_in):
        raise SchemaError(f"vector payload has {len(raw)} bytes, expected {2 * max(dim, 0) * len(rows_in)}")
    vectors = np.frombuffer(raw, dtype="<f2").reshape(len(rows_in), dim).astype(np.float16)
    check_vector_batch(rec["model"], rec["collection"], dim, vectors, rows_in, rec["metadata"])
    check_frame_view(rec["frame_width"], rec["frame_height"], rec["thumbnail"])
    rows = tuple(VectorRow(**{**r, "box": tuple(r["box"]) if r["box"] is not None else None}) for r in rec["rows"])
    return VectorBatch(
        model=rec["model"],
        vectors=vectors,
        rows=rows,
        source_url=rec["source_url"],
        collection=rec["collection"],
        content_sha256=rec["content_sha256"],
        metadata=rec["metadata"],
        run_id=rec["run_id"],
        published_at=rec["published_at"],
        frame_width=rec["frame_width"],
        frame_height=rec["frame_height"],
        thumbnail=rec["thumbnail"],
    )


# -- dead letter ------------------------------------------------------------------------------


def encode_dead_letter(dl: DeadLetter) -> bytes:
    record = asdict(dl)
    record["original_headers"] = [{"key": h.key, "value": h.value} for h in dl.original_headers]
    return _encode("dead_letter", record)


def decode_dead_letter(data: bytes) -> DeadLetter:
    rec = _decode("dead_letter", data)
    rec["original_headers"] = tuple(Header(**h) for h in rec["original_headers"])
    return DeadLetter(**rec)

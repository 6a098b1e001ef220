"""Serialisation of every event, driven by the schema files beside this module.

media.requests carries UTF-8 JSON validated against ``media_request/v1.schema.json``.
The internal topics carry Avro in the *single-object encoding* of the Avro specification:
two marker bytes ``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint of the schema's
parsing canonical form, then the Avro binary body. Any Avro library can read them; the
fingerprint says which schema version wrote the bytes.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
import jsonschema
import numpy as np
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.models import DeadLetter, Frame, Header, MediaRequest, VectorBatch, VectorRow

SCHEMA_DIR = Path(__file__).resolve().parent
MARKER = b"\xc3\x01"


class SchemaError(ValueError):
    """Bytes that do not decode as the expected event (a DLQ cause, never retried)."""


@cache
def request_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / "media_request" / "v1.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


# The version each event is written in. Every earlier version still decodes: its fingerprint picks
# the writer schema and Avro schema resolution fills the newer fields with their defaults.
CURRENT_VERSION = {"frame": 1, "vector_batch": 1, "dead_letter": 2}


@cache
def avro_schema(name: str, version: int | None = None) -> tuple[Any, bytes]:
    """Parsed Avro schema and its 8-byte fingerprint, for ``name`` (frame, ...) at ``version`` (default: current)."""
    raw = json.loads((SCHEMA_DIR / name / f"v{version or CURRENT_VERSION[name]}.avsc").read_text())
    parsed = fastavro.parse_schema(raw)
    fp = int(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"), 16)
    return parsed, struct.pack("<Q", fp)


@cache
def _writer_schemas(name: str) -> dict[bytes, Any]:
    """Fingerprint -> parsed schema, for every version of ``name`` this code can read."""
    versions = (avro_schema(name, v) for v in range(1, CURRENT_VERSION[name] + 1))
    return {fp: parsed for parsed, fp in versions}


def _encode(name: str, record: dict[str, Any]) -> bytes:
    parsed, fp = avro_schema(name)
    buf = io.BytesIO()
    buf.write(MARKER + fp)
    fastavro.schemaless_writer(buf, parsed, record)
    return buf.getvalue()


def _decode(name: str, data: bytes) -> dict[str, Any]:
    reader, _ = avro_schema(name)
    if len(data) < 10 or data[:2] != MARKER:
        raise SchemaError(f"not an Avro single-object {name} event (bad marker)")
    writer = _writer_schemas(name).get(data[2:10])
    if writer is None:
        raise SchemaError(f"unknown {name} schema fingerprint {data[2:10].hex()} (written by a newer mediavec?)")
    try:
        record = fastavro.schemaless_reader(io.BytesIO(data[10:]), writer, reader)
    except Exception as exc:  # fastavro raises several types on garbage bytes
        raise SchemaError(f"corrupt {name} event: {exc}") from exc
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
    request_validator().validate(doc)
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def decode_request(data: bytes) -> MediaRequest:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"media request is not UTF-8 JSON: {exc}") from exc
    errors = sorted(request_validator().iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "(root)"
        raise SchemaError(f"media request invalid at {where}: {errors[0].message}")
    if doc["kind"] == "video" and "end_s" in doc and doc["end_s"] <= doc.get("start_s", 0):
        raise SchemaError("media request invalid: end_s must be after start_s")
    doc.pop("schema_version")
    return MediaRequest(**doc)


# -- frame ------------------------------------------------------------------------------------


def encode_frame(frame: Frame) -> bytes:
    return _encode("frame", asdict(frame))


def decode_frame(data: bytes) -> Frame:
    return Frame(**_decode("frame", data))


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
    }
    return _encode("vector_batch", record)


def decode_vector_batch(data: bytes) -> VectorBatch:
    rec = _decode("vector_batch", data)
    rows = tuple(VectorRow(**{**r, "box": tuple(r["box"]) if r["box"] is not None else None}) for r in rec["rows"])
    dim = rec["dim"]
    raw = rec["vectors"]
    if dim <= 0 or len(raw) != 2 * dim * len(rows):
        raise SchemaError(f"vector payload has {len(raw)} bytes, expected {2 * dim * len(rows)}")
    vectors = np.frombuffer(raw, dtype="<f2").reshape(len(rows), dim).astype(np.float16)
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

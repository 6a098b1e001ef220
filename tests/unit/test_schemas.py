"""Round trips and compatibility of every event schema."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import fastavro
import numpy as np
import pytest

from schemas import (
    DeadLetter,
    Frame,
    Header,
    MediaRequest,
    SchemaError,
    VectorBatch,
    VectorRow,
    decode_dead_letter,
    decode_frame,
    decode_request,
    decode_vector_batch,
    encode_dead_letter,
    encode_frame,
    encode_request,
    encode_vector_batch,
    point_id,
)
from schemas.codec import CURRENT_VERSION, SCHEMA_DIR, avro_schema
from schemas.collections import row_payload
from schemas.limits import MAX_FRAME_SIDE, MAX_THUMBNAIL_BYTES

JPEG = b"\xff\xd8\xff\xe0 a thumbnail"


def _batch(n: int = 3, dim: int = 8) -> VectorBatch:
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, dim)).astype(np.float16)
    rows = tuple(
        VectorRow(
            point_id("m", "media-1", 0, "object", i),
            "object",
            "media-1",
            0,
            0.5,
            i,
            (1.0, 2.0, 30.5, 40.0),
            "person",
            0.75,
        )
        for i in range(n)
    )
    return VectorBatch(
        "open_clip/ViT-B-32/x", vecs, rows, "http://h/a.jpg", "default", "ab" * 32, {"k": "v"}, "run", 12.5
    )


def test_request_round_trip_and_defaults() -> None:
    req = MediaRequest(
        media_id="img-1", url="https://example.org/a.jpg", metadata={"src": "x"}, run_id="r1", published_at=3.0
    )
    assert decode_request(encode_request(req)) == req


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"schema_version": 1, "media_id": "a", "kind": "image"}, "url"),
        ({"schema_version": 1, "media_id": "a", "kind": "gif", "url": "http://x"}, "kind"),
        ({"schema_version": 2, "media_id": "a", "kind": "image", "url": "http://x"}, "schema_version"),
        ({"schema_version": 1, "media_id": "a b", "kind": "image", "url": "http://x"}, "media_id"),
        ({"schema_version": 1, "media_id": "a", "kind": "image", "url": "http://x", "surprise": 1}, "surprise"),
        # metadata that is not an object: the limits must leave it to the schema (it was a ValueError)
        ({"schema_version": 1, "media_id": "a", "kind": "image", "url": "http://x", "metadata": "ab"}, "metadata"),
        ({"schema_version": 1, "media_id": "a", "kind": "image", "url": "http://x", "metadata": ["ab"]}, "metadata"),
        (
            {"schema_version": 1, "media_id": "a", "kind": "image", "url": "http://x", "metadata": [["k", 1]]},
            "metadata",
        ),
    ],
)
def test_request_invalid_is_a_schema_error(doc: dict, where: str) -> None:
    with pytest.raises(SchemaError, match="invalid") as info:
        decode_request(json.dumps(doc).encode())
    assert where in str(info.value) or "(root)" in str(info.value)


def test_request_garbage_bytes() -> None:
    with pytest.raises(SchemaError, match="not UTF-8 JSON"):
        decode_request(b"\xff\xfe{")


def test_request_examples_in_docs_validate() -> None:
    """Every JSON example in schemas/README.md is a valid media request."""
    text = (SCHEMA_DIR / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```json")[1:]]
    examples = [json.loads(b) for b in blocks if '"schema_version"' in b and '"url"' in b]
    assert len(examples) >= 2
    for ex in examples:
        decode_request(json.dumps(ex).encode())


def test_frame_round_trip() -> None:
    f = Frame(
        "m1",
        3,
        1.25,
        "http://h/x.jpg",
        "c",
        640,
        480,
        b"\xff\xd8jpeg",
        "00" * 32,
        '{"prompts":["a"]}',
        {"a": "b"},
        "r",
        9.0,
        7,
    )
    assert decode_frame(encode_frame(f)) == f
    assert f.options == {"prompts": ["a"]}


def test_vector_batch_round_trip_is_binary_fp16() -> None:
    b = _batch()
    data = encode_vector_batch(b)
    assert b.vectors.tobytes() in data  # raw little-endian halves, not JSON floats
    out = decode_vector_batch(data)
    assert out.vectors.dtype == np.float16
    np.testing.assert_array_equal(out.vectors, b.vectors)
    assert out.rows == b.rows and out.metadata == b.metadata and out.model == b.model


def test_vector_batch_v2_carries_the_frame_size_and_thumbnail() -> None:
    b = dataclasses.replace(_batch(), frame_width=640, frame_height=480, thumbnail=JPEG)
    out = decode_vector_batch(encode_vector_batch(b))
    assert (out.frame_width, out.frame_height, out.thumbnail) == (640, 480, JPEG)
    bare = decode_vector_batch(encode_vector_batch(_batch()))
    assert (bare.frame_width, bare.frame_height, bare.thumbnail) == (0, 0, None)


def test_a_v1_vector_batch_still_decodes_with_no_frame_size_or_thumbnail() -> None:
    """Batches already on the vectors topic when the v2 writers start stay readable by every sink."""
    import io

    v1, fp = avro_schema("vector_batch", 1)
    b = _batch()
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + fp)
    record = {
        "model": b.model,
        "dim": b.dim,
        "vectors": b.vectors.astype("<f2").tobytes(),
        "rows": [{**dataclasses.asdict(r), "box": list(r.box) if r.box else None} for r in b.rows],
        "source_url": b.source_url,
        "collection": b.collection,
        "metadata": b.metadata,
    }
    fastavro.schemaless_writer(buf, v1, record)
    out = decode_vector_batch(buf.getvalue())
    assert out.rows == b.rows and out.source_url == b.source_url
    np.testing.assert_array_equal(out.vectors, b.vectors)
    assert (out.frame_width, out.frame_height, out.thumbnail) == (0, 0, None)
    assert encode_vector_batch(out)[2:10] == avro_schema("vector_batch")[1] != fp  # written as the current version


@pytest.mark.parametrize(
    ("width", "height", "thumbnail", "why"),
    [
        (640, 480, JPEG + b"\0" * MAX_THUMBNAIL_BYTES, "thumbnail is .* over the limit"),
        (640, 480, b"GIF89a", "not a JPEG"),
        (640, 0, None, "frame size 640x0"),
        (-1, 480, None, "frame size -1x480"),
        (MAX_FRAME_SIDE + 1, 480, None, "outside 1..8192"),
    ],
)
def test_a_vector_batch_with_a_bad_thumbnail_or_frame_size_is_refused(
    width: int, height: int, thumbnail: bytes | None, why: str
) -> None:
    bad = dataclasses.replace(_batch(), frame_width=width, frame_height=height, thumbnail=thumbnail)
    with pytest.raises(SchemaError, match=why):
        decode_vector_batch(encode_vector_batch(bad))


def test_a_thumbnail_at_the_limit_and_the_largest_frame_pass() -> None:
    edge = JPEG + b"\0" * (MAX_THUMBNAIL_BYTES - len(JPEG))
    b = dataclasses.replace(_batch(), frame_width=MAX_FRAME_SIDE, frame_height=1, thumbnail=edge)
    assert decode_vector_batch(encode_vector_batch(b)).thumbnail == edge


def test_the_stored_payload_carries_the_frame_size_or_none() -> None:
    b = dataclasses.replace(_batch(), frame_width=640, frame_height=480)
    payload = row_payload(b, b.rows[0])
    assert (payload["frame_width"], payload["frame_height"], payload["box"]) == (640, 480, [1.0, 2.0, 30.5, 40.0])
    unknown = row_payload(_batch(), _batch().rows[0])
    assert (unknown["frame_width"], unknown["frame_height"]) == (None, None)
    assert "thumbnail" not in payload  # thumbnails live in PostgreSQL, not in every point's payload


def test_vector_batch_rejects_wrong_dtype_and_row_count() -> None:
    with pytest.raises(ValueError, match="float16"):
        VectorBatch("m", np.zeros((1, 4), np.float32), _batch(1).rows, "u", "c")
    with pytest.raises(ValueError, match="rows"):
        VectorBatch("m", np.zeros((2, 4), np.float16), _batch(1).rows, "u", "c")


def test_dead_letter_round_trip() -> None:
    dl = DeadLetter(
        "fetch",
        "http_404",
        "not found",
        "p.media.requests",
        2,
        77,
        b"{}",
        1.5,
        b"k",
        (Header("h", b"v"), Header("n", None)),
        "k",
        1,
        {"url": "https://cdn.example/x.jpg?<redacted>", "frames_published": "3"},
    )
    assert decode_dead_letter(encode_dead_letter(dl)) == dl


@pytest.mark.parametrize("data", [b"", b"{}", b"\xc3\x01" + b"\0" * 8 + b"x", b"\xc3\x01" + b"\xff" * 20])
def test_avro_garbage_is_a_schema_error(data: bytes) -> None:
    with pytest.raises(SchemaError):
        decode_frame(data)


def test_single_object_encoding_is_readable_by_any_avro_reader() -> None:
    """Marker, fingerprint, then a plain Avro body: a generic reader decodes it with the .avsc file."""
    import io

    data = encode_vector_batch(_batch())
    assert data[:2] == b"\xc3\x01"
    current = CURRENT_VERSION["vector_batch"]
    schema = fastavro.parse_schema(json.loads((SCHEMA_DIR / "vector_batch" / f"v{current}.avsc").read_text()))
    rec = fastavro.schemaless_reader(io.BytesIO(data[10:]), schema, schema)
    assert isinstance(rec, dict) and rec["dim"] == 8 and len(rec["rows"]) == 3


def test_old_writer_without_defaulted_fields_is_still_readable() -> None:
    """Compatibility: an event written by a minimal writer (only required fields) resolves to defaults."""
    import io

    full = json.loads((SCHEMA_DIR / "frame" / "v1.avsc").read_text())
    minimal = {**full, "fields": [f for f in full["fields"] if "default" not in f]}
    writer = fastavro.parse_schema(minimal)
    reader, _ = avro_schema("frame")
    buf = io.BytesIO()
    rec = {
        "media_id": "m",
        "frame_index": 0,
        "timestamp_s": 0.0,
        "source_url": "u",
        "collection": "c",
        "width": 1,
        "height": 1,
        "jpeg": b"j",
        "content_sha256": "",
    }
    fastavro.schemaless_writer(buf, writer, rec)
    buf.seek(0)
    out = fastavro.schemaless_reader(buf, writer, reader)
    assert isinstance(out, dict)
    assert out["options_json"] == "{}" and out["metadata"] == {} and out["frames_in_media"] == 1


def _pinned() -> dict[str, str]:
    return dict(json.loads((Path(__file__).parent / "schema_fingerprints.json").read_text()))


@pytest.mark.parametrize("key", sorted(_pinned()))
def test_published_fingerprints_are_pinned(key: str) -> None:
    name, version = key.split("/v")
    _, fp = avro_schema(name, int(version))
    assert fp.hex() == _pinned()[key], f"{key} changed in place; publish a new version instead"
    assert struct.unpack("<Q", fp)[0] > 0


def test_every_schema_file_is_pinned_and_the_current_one_is_the_newest() -> None:
    files = {f"{p.parent.name}/{p.stem}" for p in SCHEMA_DIR.glob("*/v*.avsc")}
    assert files == set(_pinned())
    for name, current in CURRENT_VERSION.items():
        assert current == max(int(k.split("/v")[1]) for k in files if k.startswith(f"{name}/"))


def test_a_v1_dead_letter_still_decodes_with_empty_details() -> None:
    """Letters already on the topic when a newer mediavec starts stay readable (and redrivable)."""
    import io

    v1, fp = avro_schema("dead_letter", 1)
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + fp)
    rec = {
        "stage": "fetch",
        "error_class": "http_404",
        "reason": "not found",
        "source_topic": "media.requests",
        "source_partition": 0,
        "source_offset": 9,
        "original_key": b"k",
        "original_value": b"{}",
        "original_headers": [],
        "failed_at": 1.0,
        "media_id": "k",
        "redrive_count": 0,
    }
    fastavro.schemaless_writer(buf, v1, rec)
    dl = decode_dead_letter(buf.getvalue())
    assert (dl.error_class, dl.source_offset, dl.original_value, dl.details) == ("http_404", 9, b"{}", {})
    assert encode_dead_letter(dl)[2:10] == avro_schema("dead_letter")[1] != fp  # written as the current version


def test_point_ids_are_deterministic_and_distinct() -> None:
    a = point_id("m", "x", 0, "scene")
    assert a == point_id("m", "x", 0, "scene")
    assert (
        len(
            {
                a,
                point_id("m2", "x", 0, "scene"),
                point_id("m", "x", 1, "scene"),
                point_id("m", "x", 0, "object"),
                point_id("m", "x", 0, "scene", 1),
            }
        )
        == 5
    )
    # Pinned: producers in other languages recompute ids with UUIDv5 (schemas/README.md).
    assert a == "fb3d1b25-3cfe-55e9-8290-9ab5aca68978"

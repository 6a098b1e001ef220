"""Hostile Kafka records, as hypothesis strategies: what a producer nobody here wrote may publish.

Every strategy draws a :class:`Hostile` record (key, value, headers) for one input topic. The
classes covered (each named in ``Hostile.kind``, so a failing example says what it was):

- ``random``: random bytes; ``empty``: ``b""``; ``tombstone``: a null value;
- ``truncated`` / ``mutated``: a valid encoding cut short, or with bytes flipped;
- ``fingerprint``: the Avro marker with an unknown schema fingerprint (a newer version);
- ``wrong_event``: a valid event of another topic (a frame on the vectors topic, ...);
- ``deep``: JSON nested thousands of levels (in a request, or in a frame's options);
- ``wrong_types`` / ``unknown_version``: request documents with fields of the wrong type, unknown
  fields or ``schema_version`` 2; Avro events whose fields hold values no stage produces (NaN,
  non-UUID point ids, bad collection names, boxes of 3 numbers);
- ``huge``: a value near the broker's message limit (a 2 MB metadata map included);
- any of them with random keys and headers (``mediavec-redrive-count`` garbage included).

URLs inside requests only ever name 127.0.0.1, ``file://`` or a scheme the fetch stage refuses,
so no example can send traffic anywhere but this machine.
"""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from schemas import Frame, VectorBatch, VectorRow, encode_frame, encode_vector_batch, point_id
from schemas.codec import MARKER

MODEL = "open_clip/test/hostile"
NEAR_LIMIT = 7 * 1024 * 1024  # the topics' max.message.bytes is 8 MiB


@dataclass(frozen=True)
class Hostile:
    kind: str
    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()


def jpeg(seed: int, size: int = 32) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def good_request(media_id: str, url: str) -> dict[str, object]:
    return {"schema_version": 1, "media_id": media_id, "kind": "image", "url": url, "collection": "fuzz"}


def good_frame(media_id: str, seed: int = 0, **changes: object) -> Frame:
    fields: dict[str, object] = {
        "media_id": media_id,
        "frame_index": 0,
        "timestamp_s": 0.0,
        "source_url": f"http://127.0.0.1/{media_id}.jpg",
        "collection": "fuzz",
        "width": 32,
        "height": 32,
        "jpeg": jpeg(seed),
        "content_sha256": "0" * 64,
        **changes,
    }
    return Frame(**fields)  # type: ignore[arg-type]


def good_batch(media_id: str, dim: int = 8, seed: int = 0, **changes: object) -> VectorBatch:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(2, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    rows = (
        VectorRow(point_id(MODEL, media_id, 0, "scene"), "scene", media_id, 0, 0.0),
        VectorRow(point_id(MODEL, media_id, 0, "object", 1), "object", media_id, 0, 0.0, 1, (1.0, 2.0, 3.0, 4.0), "p"),
    )
    fields: dict[str, object] = {
        "model": MODEL,
        "vectors": v.astype(np.float16),
        "rows": rows,
        "source_url": f"http://127.0.0.1/{media_id}.jpg",
        "collection": "fuzz",
        **changes,
    }
    return VectorBatch(**fields)  # type: ignore[arg-type]


# -- generic byte-level hostility -----------------------------------------------------------------

_ids = st.text("abcdefghij0123456789-", min_size=1, max_size=12)
_header = st.tuples(
    st.one_of(st.text(max_size=20), st.just("mediavec-redrive-count")),
    st.one_of(st.none(), st.binary(max_size=40), st.sampled_from([b"abc", b"-5", b"9" * 5000])),
)
_headers = st.lists(_header, max_size=4).map(tuple)
_keys = st.one_of(st.none(), st.binary(max_size=40))


def _garbage(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[tuple[str, bytes | None]]:
    """Byte-level damage to values drawn from ``valid``."""

    @st.composite
    def damaged(draw: st.DrawFn) -> tuple[str, bytes | None]:
        kind = draw(st.sampled_from(["random", "empty", "tombstone", "truncated", "mutated", "fingerprint"]))
        if kind == "random":
            return kind, draw(st.binary(max_size=300))
        if kind == "empty":
            return kind, b""
        if kind == "tombstone":
            return kind, None
        good = draw(valid)
        if kind == "truncated":
            return kind, good[: draw(st.integers(0, max(0, len(good) - 1)))]
        if kind == "fingerprint":
            return kind, MARKER + draw(st.binary(min_size=8, max_size=8)) + good[10:]
        data = bytearray(good)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return kind, bytes(data)

    return damaged()


def _with_envelope(pairs: st.SearchStrategy[tuple[str, bytes | None]]) -> st.SearchStrategy[Hostile]:
    return st.builds(lambda kv, k, h: Hostile(kv[0], kv[1], k, h), pairs, _keys, _headers)


# -- media.requests -------------------------------------------------------------------------------

_urls = st.one_of(
    st.builds(lambda p: f"http://127.0.0.1:9/{p}", st.text("abc/.%", max_size=20)),  # loopback, nothing listens
    st.sampled_from(["ftp://127.0.0.1/x.jpg", "file:///etc/passwd", "gopher://127.0.0.1/", "javascript:alert(1)"]),
    st.just("http://127.0.0.1/" + "a" * 5000),
)
_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30))


@st.composite
def _request_docs(draw: st.DrawFn) -> tuple[str, bytes | None]:
    doc: dict[str, object] = good_request(draw(_ids), draw(_urls))
    kind = draw(st.sampled_from(["wrong_types", "unknown_version", "deep", "huge", "json_scalar"]))
    if kind == "wrong_types":
        field = draw(st.sampled_from(["media_id", "kind", "url", "collection", "metadata", "options", "start_s"]))
        doc[field] = draw(st.one_of(_json_scalars, st.lists(_json_scalars, max_size=3)))
        if draw(st.booleans()):
            doc[draw(st.text(min_size=1, max_size=10))] = draw(_json_scalars)
    elif kind == "unknown_version":
        doc["schema_version"] = draw(st.sampled_from([0, 2, 99, "1"]))
    elif kind == "deep":
        depth = draw(st.sampled_from([9, 50, 3000, 100_000]))
        if draw(st.booleans()):
            return kind, b"[" * depth + b"]" * depth
        doc["options"] = json.loads("[" * min(depth, 900) + "]" * min(depth, 900))
        doc["options"] = {"nested": doc["options"]}
    elif kind == "huge":
        if draw(st.booleans()):
            doc["metadata"] = {"blob": "x" * (2 * 1024 * 1024)}
        else:
            doc["metadata"] = {f"k{i}": "v" for i in range(draw(st.sampled_from([65, 5000])))}
    else:
        return kind, json.dumps(draw(_json_scalars)).encode()
    return kind, json.dumps(doc).encode()


def _valid_request_bytes() -> st.SearchStrategy[bytes]:
    return st.builds(lambda i, u: json.dumps(good_request(i, u)).encode(), _ids, _urls)


def hostile_requests() -> st.SearchStrategy[Hostile]:
    return _with_envelope(
        st.one_of(
            _garbage(_valid_request_bytes()),
            _request_docs(),
            st.just(("huge", b'{"x":"' + b"y" * NEAR_LIMIT + b'"}')),
            st.just(("random", bytes(range(256)) * 4)),  # invalid UTF-8
        )
    )


# -- media.frames ---------------------------------------------------------------------------------


@st.composite
def _frame_values(draw: st.DrawFn) -> tuple[str, bytes | None]:
    media = draw(_ids)
    kind = draw(st.sampled_from(["wrong_types", "deep", "huge", "wrong_event"]))
    if kind == "wrong_types":
        change = draw(
            st.sampled_from(
                [
                    {"jpeg": b"not a jpeg"},
                    {"jpeg": b""},
                    {"options_json": "not json"},
                    {"options_json": "[1, 2]"},
                    {"collection": "../../etc"},
                    {"width": -5, "height": 0},
                    {"frame_index": -1},
                ]
            )
        )
        return kind, encode_frame(good_frame(media, **change))
    if kind == "deep":
        return kind, encode_frame(good_frame(media, options_json="[" * 5000 + "]" * 5000))
    if kind == "huge":
        big: dict[str, object] = {"jpeg": b"\xff" * NEAR_LIMIT}
        if draw(st.booleans()):
            big = {"metadata": {"blob": "x" * (2 * 1024 * 1024)}}
        return kind, encode_frame(good_frame(media, **big))
    return kind, encode_vector_batch(good_batch(media))


def hostile_frames() -> st.SearchStrategy[Hostile]:
    valid = st.builds(lambda i: encode_frame(good_frame(i)), _ids)
    return _with_envelope(st.one_of(_garbage(valid), _frame_values()))


# -- vectors --------------------------------------------------------------------------------------


@st.composite
def _batch_values(draw: st.DrawFn) -> tuple[str, bytes | None]:
    media = draw(_ids)
    kind = draw(st.sampled_from(["wrong_types", "huge", "wrong_event"]))
    if kind == "wrong_event":
        return kind, encode_frame(good_frame(media))
    if kind == "huge":
        return kind, encode_vector_batch(good_batch(media, metadata={"blob": "x" * (2 * 1024 * 1024)}))
    batch = good_batch(media)
    scene, obj = batch.rows
    bad_rows = {
        "nan": {"vectors": np.full((2, 8), np.nan, np.float16)},
        "point_id": {"rows": (VectorRow("not-a-uuid", "scene", media, 0, 0.0), obj)},
        "box": {"rows": (scene, VectorRow(obj.point_id, "object", media, 0, 0.0, 1, (1.0, 2.0, 3.0)))},  # type: ignore[arg-type]
        "collection": {"collection": "../../etc"},
        "nul": {"metadata": {"k": "a\x00b"}},
        "dim": {"vectors": np.zeros((2, 0), np.float16)},
        "empty_model": {"model": ""},
        "thumbnail": {"thumbnail": b"\xff\xd8" + b"x" * (65 * 1024)},
        "not_jpeg": {"thumbnail": b"GIF89a"},
        "frame_size": {"frame_width": -1, "frame_height": 9},
        "inf_score": {"rows": (VectorRow(scene.point_id, "scene", media, 0, float("inf"), score=float("nan")), obj)},
    }
    name = draw(st.sampled_from(sorted(bad_rows)))
    changed = VectorBatch(**{**batch.__dict__, **bad_rows[name]})
    return f"wrong_types:{name}", encode_vector_batch(changed)


def hostile_vectors() -> st.SearchStrategy[Hostile]:
    valid = st.builds(lambda i: encode_vector_batch(good_batch(i)), _ids)
    return _with_envelope(st.one_of(_garbage(valid), _batch_values()))


def fresh_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"

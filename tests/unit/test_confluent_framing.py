"""The Confluent wire format for the Avro topics, without a registry: ids given, schemas resolved by a function.

The registry itself (registration, ids, a third-party reader) is tests/integration/test_schema_registry.py.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator

import fastavro
import numpy as np
import pytest

from schemas import SchemaError, decode_dead_letter, decode_vector_batch, encode_dead_letter, encode_vector_batch
from schemas.codec import MARKER, avro_schema, schema_text, use_registry
from schemas.models import DeadLetter
from streams.settings import SchemaRegistrySettings
from tests.unit.test_schemas import _batch


@pytest.fixture(autouse=True)
def _single_object_afterwards() -> Iterator[None]:
    yield
    use_registry({}, None)


def _confluent(schema_id: int, data: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", schema_id) + data


def test_events_are_written_with_the_registry_id_and_read_back() -> None:
    use_registry({"vector_batch": 7}, None)
    batch = _batch()
    data = encode_vector_batch(batch)
    assert data[:5] == b"\x00\x00\x00\x00\x07"
    out = decode_vector_batch(data)
    np.testing.assert_array_equal(out.vectors, batch.vectors)
    assert out.rows == batch.rows
    # The body after the 5-byte header is plain Avro binary: what any registry-aware reader decodes.
    parsed, _ = avro_schema("vector_batch")
    record = fastavro.schemaless_reader(io.BytesIO(data[5:]), parsed, parsed)
    assert isinstance(record, dict) and record["model"] == batch.model
    # An event not named keeps the single-object encoding, and both stay readable.
    letter = DeadLetter("fetch", "x", "reason", "t", 0, 0, b"raw", 1.0, media_id="m")
    assert encode_dead_letter(letter)[:2] == MARKER
    assert decode_dead_letter(encode_dead_letter(letter)) == letter


def test_an_unknown_id_is_asked_of_the_registry_once() -> None:
    asked: list[int] = []
    v1, _ = avro_schema("vector_batch", 1)

    def resolve(schema_id: int) -> str:
        asked.append(schema_id)
        if schema_id == 41:
            return schema_text("vector_batch", 1)
        raise LookupError(schema_id)

    use_registry({}, resolve)
    batch = _batch()
    body = io.BytesIO()
    record = {
        "model": batch.model,
        "dim": batch.dim,
        "vectors": batch.vectors.astype("<f2").tobytes(),
        "rows": [{**r.__dict__, "box": list(r.box) if r.box else None} for r in batch.rows],
        "source_url": batch.source_url,
        "collection": batch.collection,
        "metadata": batch.metadata,
    }
    fastavro.schemaless_writer(body, v1, record)  # another writer, in an older version of the schema
    for _ in range(2):
        assert decode_vector_batch(_confluent(41, body.getvalue())).rows == batch.rows
        with pytest.raises(SchemaError, match="schema id 9, which the registry does not have"):
            decode_vector_batch(_confluent(9, body.getvalue()))
    assert asked == [41, 9], "each id is asked once: garbage cannot make the registry a hot path"


def test_a_registry_framed_event_without_a_registry_or_of_another_schema_is_a_schema_error() -> None:
    letter = DeadLetter("fetch", "x", "reason", "t", 0, 0, b"raw", 1.0, media_id="m")
    use_registry({"dead_letter": 3}, None)
    framed = encode_dead_letter(letter)
    with pytest.raises(SchemaError, match="corrupt vector_batch"):  # id 3 is a dead letter's schema
        decode_vector_batch(framed)
    use_registry({}, None)
    with pytest.raises(SchemaError, match="none is configured"):
        decode_dead_letter(framed)


def test_registry_settings_refuse_confluent_framing_without_a_url_and_credentials_in_it() -> None:
    with pytest.raises(ValueError, match="framing 'confluent' needs the registry's url"):
        SchemaRegistrySettings(framing="confluent")
    with pytest.raises(ValueError, match="holds credentials"):
        SchemaRegistrySettings(url="http://u:pw@registry:8081")
    assert SchemaRegistrySettings(url="https://registry:8081").framing == "single-object"

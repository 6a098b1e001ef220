"""The wire benchmark's round trip on the test stack's broker, small: both encodings carry the same vectors."""

from __future__ import annotations

import numpy as np
import pytest

from devstack.settings import DevSettings
from loadtest.bench_wire import decode_avro, decode_json, encode_json, make_batches, report, round_trip
from mediavec.settings import Settings
from schemas import encode_vector_batch

pytestmark = pytest.mark.integration


def test_both_encodings_round_trip_the_same_vectors_through_the_broker(
    settings: Settings, stack_settings: DevSettings
) -> None:
    batches = make_batches(6, rows=4, dim=32)
    for batch in batches:  # JSON of fp16 values read back exactly: the comparison is of the same vectors
        np.testing.assert_array_equal(decode_json(encode_json(batch)), batch.vectors)
        np.testing.assert_array_equal(decode_avro(encode_vector_batch(batch)), batch.vectors)
    logs = stack_settings.data_dir / "kafka" / "data"
    avro = round_trip(settings, logs, "fp16 Avro (mediavec)", batches, encode_vector_batch, decode_avro)
    plain = round_trip(settings, logs, "JSON float list", batches, encode_json, decode_json)
    assert avro.vectors == plain.vectors == 24
    assert 0 < avro.value_bytes < plain.value_bytes and avro.disk_bytes > 0 and plain.disk_bytes > 0
    assert "| fp16 Avro (mediavec) | 24 |" in report([avro, plain], 4, 32, 6, 1)

"""Which broker has a role, worked out without a broker: the transaction coordinator's partition
of a transactional id (Java's String.hashCode, as Kafka computes it) and the active controller
read from a DescribeQuorum response. The chaos tests kill brokers by these answers. The expected
hashes are what Java 17's ``String.hashCode()`` printed for these strings."""

from __future__ import annotations

import struct

import pytest

from tests.cluster import _describe_quorum_request, _quorum_leader, _uvarint, java_string_hash, txn_partition


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("hello", 99162322),
        ("Aa", 2112),
        ("BB", 2112),  # Java's best-known collision
        ("polygenelubricants", -(1 << 31)),  # the famous string whose hash is Integer.MIN_VALUE
        ("\u00e9", 233),
        ("\U0001f600", 0xD83D * 31 + 0xDE00),  # beyond the BMP: two UTF-16 code units, as Java sees it
        ("mediavec.embed.worker-00000000001", -1_328_848_235),  # wraps around 32 bits, negative
    ],
)
def test_java_string_hash_is_javas(text: str, expected: int) -> None:
    assert java_string_hash(text) == expected


def test_txn_partition_is_kafkas_abs_hash_modulo_partitions() -> None:
    assert txn_partition("hello", 8) == 99162322 % 8
    assert txn_partition("polygenelubricants", 50) == 0  # Utils.abs(MIN_VALUE) is 0, not negative
    assert txn_partition("mediavec.embed.worker-00000000001", 50) == 1_328_848_235 % 50


def _response(leader: int, error: int = 0, partition_error: int = 0) -> bytes:
    """A DescribeQuorum v0 response body as a broker sends it, up to the fields read."""
    name = b"__cluster_metadata"
    topic = _uvarint(len(name) + 1) + name + _uvarint(2) + struct.pack(">ihi", 0, partition_error, leader)
    return struct.pack(">i", 7) + b"\x00" + struct.pack(">h", error) + _uvarint(2) + topic + b"\x00" * 8


def test_quorum_leader_is_read_from_a_describe_quorum_response() -> None:
    assert _quorum_leader(_response(leader=2)) == 2
    with pytest.raises(RuntimeError, match="error code 6"):
        _quorum_leader(_response(leader=-1, partition_error=6))
    with pytest.raises(RuntimeError, match="error code 41"):
        _quorum_leader(_response(leader=-1, error=41))


def test_describe_quorum_request_is_framed_and_asks_for_the_metadata_partition() -> None:
    frame = _describe_quorum_request(correlation=9)
    (size,) = struct.unpack(">i", frame[:4])
    assert size == len(frame) - 4
    assert struct.unpack(">hhi", frame[4:12]) == (55, 0, 9)
    assert b"__cluster_metadata" in frame

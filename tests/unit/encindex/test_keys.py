"""Index keys: where they come from, what is refused, and that they never show."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest

from consumers.sink_encrypted.sink import EncryptedSink
from mediavec.settings import Settings
from stores.encindex import IndexKey, IndexKeyError, generate_key, load_key, parse_key
from stores.encindex.keys import write_key_file


def test_key_from_raw_file_hex_file_and_variable(tmp_path: Path, key: IndexKey) -> None:
    raw, hexed = tmp_path / "raw.key", tmp_path / "hex.key"
    raw.write_bytes(key.reveal())
    hexed.write_text(f"  {key.reveal().hex().upper()}\n")
    for path in (raw, hexed):
        path.chmod(0o600)
        assert load_key(path, None) == key
    env = {"MY_INDEX_KEY": key.reveal().hex()}
    loaded = load_key(None, "MY_INDEX_KEY", env)
    assert loaded == key and loaded.key_id == key.key_id
    written = tmp_path / "new.key"
    write_key_file(written, key)
    assert load_key(written, None) == key and written.stat().st_mode & 0o777 == 0o600


def test_missing_or_doubly_configured_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(IndexKeyError, match="no index key configured"):
        load_key(None, None, {})
    with pytest.raises(IndexKeyError, match="not set"):
        load_key(None, "ABSENT_KEY_VARIABLE", {})
    with pytest.raises(IndexKeyError, match="only one"):
        load_key(tmp_path / "k", "X", {"X": "00" * 32})
    with pytest.raises(IndexKeyError, match="cannot read"):
        load_key(tmp_path / "missing.key", None)
    with pytest.raises(IndexKeyError, match="no index key configured"):
        EncryptedSink(Settings(data_dir=tmp_path)).start()  # no source set: never a default key


@pytest.mark.parametrize(
    "content",
    [b"\x01" * 31, b"\x01" * 33, b"ab" * 16, b"ab" * 31 + b"zz", b"ab" * 33, b""],
    ids=["raw-31", "raw-33", "hex-16-bytes", "not-hex", "hex-33-bytes", "empty"],
)
def test_wrong_length_or_malformed_keys_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(IndexKeyError) as err:
        load_key(path, None)
    assert content.hex() not in str(err.value) or not content
    with pytest.raises(IndexKeyError, match=r"hex characters|not set or empty"):
        load_key(None, "K", {"K": content.decode("latin-1")})
    with pytest.raises(IndexKeyError, match="32 bytes"):
        IndexKey(b"\x00" * 16)


def test_repr_str_and_pickle_do_not_reveal_the_key(key: IndexKey) -> None:
    raw, hexed = key.reveal(), key.reveal().hex()
    for text in (repr(key), str(key), f"{key}", f"{key!r}", format(key), repr([key])):
        assert hexed not in text.lower() and raw.decode("latin-1") not in text
        assert key.key_id in text
    with pytest.raises(TypeError):
        pickle.dumps(key)
    assert parse_key(raw, "test") == key and parse_key(hexed.encode(), "test") == key
    assert generate_key() != key


def test_a_loose_key_file_mode_is_warned_about_without_the_key(
    tmp_path: Path, key: IndexKey, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "loose.key"
    path.write_bytes(key.reveal())
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert load_key(path, None) == key
    assert "chmod 600" in caplog.text and key.reveal().hex() not in caplog.text

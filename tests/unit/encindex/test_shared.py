"""An encrypted store held by one process is read by others that hold its key (stores/encindex/shared.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mediavec.settings import Settings
from stores.encindex import (
    EncIndexSettings,
    generate_key,
    open_encrypted_reader,
    open_encrypted_store,
    write_key_file,
)
from stores.encindex.shared import SharedEncryptedStore
from stores.vectorstore import StoreLockedError, VectorStoreError
from stores.vectorstore.shared import QUERY_FILE
from tests.unit.encindex.helpers import DIM, NAME, payloads, point_ids, unit_vectors

OWNER = """
import sys
from pathlib import Path
from mediavec.settings import Settings
from stores.encindex import EncIndexSettings, open_encrypted_store
from tests.unit.encindex.helpers import NAME, DIM, payloads, point_ids, unit_vectors

settings = Settings(data_dir=sys.argv[1], encindex=EncIndexSettings(key_file=Path(sys.argv[2])))
store = open_encrypted_store(settings)
store.ensure_collection(NAME, DIM)
store.upsert(NAME, point_ids(5, "a"), unit_vectors(5, 1), payloads(5, "a"))
print("ready", flush=True)
sys.stdin.read()
store.close()
"""


def _settings(tmp_path: Path, key_file: Path) -> Settings:
    return Settings(data_dir=tmp_path, encindex=EncIndexSettings(key_file=key_file))


def test_a_held_encrypted_store_is_read_by_a_holder_of_its_key_only(tmp_path: Path) -> None:
    key_file, other_key = tmp_path / "index.key", tmp_path / "other.key"
    write_key_file(key_file, generate_key())
    write_key_file(other_key, generate_key())
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path), str(key_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == b"ready"
        settings = _settings(tmp_path, key_file)
        with pytest.raises(StoreLockedError):
            open_encrypted_store(settings)  # a second opener is still refused

        reader = open_encrypted_reader(settings)
        assert isinstance(reader, SharedEncryptedStore)
        assert reader.collections() == [NAME] and reader.dim(NAME) == DIM and reader.count(NAME) == 5
        query = unit_vectors(5, 1)[3].astype(np.float32)
        top = reader.search(NAME, query, limit=2)
        assert top[0].id == point_ids(5, "a")[3] and top[0].payload == payloads(5, "a")[3]  # decrypted
        with pytest.raises(VectorStoreError, match="not written"):
            reader.save_offsets("x", {("t", 0): 1})

        # The query file names no token: a process without the key is not answered.
        assert "token" not in (tmp_path / "encindex" / QUERY_FILE).read_text()
        with pytest.raises(VectorStoreError, match="under another index key"):
            open_encrypted_reader(_settings(tmp_path, other_key))
    finally:
        if owner.stdin is not None:
            owner.stdin.close()
        owner.wait(timeout=60)
    assert not (tmp_path / "encindex" / QUERY_FILE).exists()

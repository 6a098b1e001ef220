"""Fixtures of the encrypted-index tests: a fresh key, and a small-shard store on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stores.encindex import IndexKey, generate_key
from stores.encindex.store import EncryptedStore
from tests.unit.encindex.helpers import DIM, NAME, enc_settings


@pytest.fixture
def key() -> IndexKey:
    return generate_key()


@pytest.fixture
def store(tmp_path: Path, key: IndexKey) -> Iterator[EncryptedStore]:
    s = EncryptedStore(tmp_path / "enc", key, enc_settings(tmp_path, capacity=50))
    s.ensure_collection(NAME, DIM)
    yield s
    s.close()

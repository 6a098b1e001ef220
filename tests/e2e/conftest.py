"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import pytest

from mediavec.settings import Settings
from stores.encindex.keys import generate_key, write_key_file
from tests.e2e.corpus import loopback_fetch_settings


@pytest.fixture
def e2e_settings(settings: Settings) -> Settings:
    fetch = loopback_fetch_settings()
    key_file = settings.data_dir / "index.key"
    write_key_file(key_file, generate_key())
    encindex = settings.encindex.model_copy(update={"key_file": key_file})
    return settings.model_copy(update={"fetch": fetch, "encindex": encindex})

"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import pytest

from mediavec.encindex.keys import generate_key, write_key_file
from streams.settings import FetchSettings, Settings


@pytest.fixture
def e2e_settings(settings: Settings) -> Settings:
    fetch = FetchSettings(
        allow_cidrs=("127.0.0.1/32",),
        connect_timeout_s=2.0,
        read_timeout_s=2.5,
        total_deadline_s=10.0,
        retries=2,
        backoff_base_s=0.05,
        per_host_concurrency=16,
        concurrency=32,
        max_pixels=40_000_000,
    )
    key_file = settings.data_dir / "index.key"
    write_key_file(key_file, generate_key())
    encindex = settings.encindex.model_copy(update={"key_file": key_file})
    return settings.model_copy(update={"fetch": fetch, "encindex": encindex})

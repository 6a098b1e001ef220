"""The seen table's followers pass over their own writes (already in their table) and apply every other writer's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mediavec.settings import Settings
from streams.admin import ensure_topics
from streams.kafka import producer
from streams.table import GlobalTable
from streams.topics import topics
from tests.kafkautil import wait_for

pytestmark = pytest.mark.integration


def test_a_follower_passes_over_its_own_writes_and_applies_the_others(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings)
    name = topics(settings).seen.name
    a, b = GlobalTable(settings, name, tmp_path / "a.sqlite"), GlobalTable(settings, name)
    a.start()
    b.start()
    try:
        assert a.headers != b.headers  # a token per table object
        p = producer(settings)
        for key, writer in ((b"c|url|by-a", a), (b"c|url|by-b", b)):  # as each one's claims write them
            value = json.dumps({"media_id": key.decode()}).encode()
            p.produce(name, key=key, value=value, headers=[(h.key, h.value) for h in writer.headers])
        assert p.flush(60) == 0
        wait_for(lambda: b.get("c|url|by-a") is not None and a.get("c|url|by-b") is not None, 60, "each follower")
        wait_for(lambda: a.skipped_own == 1 and b.skipped_own == 1, 60, "each follower to reach its own record")
        # Neither applied its own record: a real writer put it in its table when it wrote it.
        assert a.get("c|url|by-a") is None and b.get("c|url|by-b") is None
        fresh = GlobalTable(settings, name)  # a restarted worker: a new token, so it loads them all
        fresh.start()
        try:
            assert fresh.get("c|url|by-a") == {"media_id": "c|url|by-a"} and fresh.get("c|url|by-b") is not None
            assert fresh.skipped_own == 0
        finally:
            fresh.close()
    finally:
        a.close()
        b.close()

"""An embedded store held by one process is read by others through it (stores/vectorstore/shared.py).

The owner is a real second process that opens the store as the Qdrant sink does and keeps
writing on command; this process reads through it, as `mediavec search` does during ingest.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mediavec.settings import Settings
from stores.settings import QdrantSettings
from stores.vectorstore import StoreLockedError, UnknownCollectionError, VectorStoreError, open_store
from stores.vectorstore.shared import QUERY_FILE, SharedStore

DIM = 8
OWNER = """
import sys
import numpy as np
from mediavec.settings import Settings
from stores.settings import QdrantSettings
from stores.vectorstore import open_store

settings = Settings(data_dir=sys.argv[1], qdrant=QdrantSettings(backend=sys.argv[2]))
store = open_store(settings)
store.ensure_collection("c__m", 8)
print("ready", flush=True)
for line in sys.stdin:  # "write <n>": n more points, then "written"
    n = int(line.split()[1])
    start = store.count("c__m")
    ids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(start, start + n)]
    vectors = np.eye(8, dtype=np.float16)[[i % 8 for i in range(start, start + n)]]
    payloads = [{"space": "scene" if i % 2 == 0 else "object", "i": i} for i in range(start, start + n)]
    store.upsert("c__m", ids, vectors, payloads)
    print("written", flush=True)
store.close()
"""


class Owner:
    def __init__(self, data: Path, backend: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", OWNER, str(data), backend], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def write(self, n: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"write {n}\n")
        self.proc.stdin.flush()
        assert self._line() == "written"

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(params=["edge", "local"])
def owned(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Settings, Owner]]:
    settings = Settings(data_dir=tmp_path, qdrant=QdrantSettings(backend=request.param))
    owner = Owner(tmp_path, request.param)
    try:
        yield settings, owner
    finally:
        owner.stop()


def test_a_held_store_is_read_through_its_owner_while_it_writes(owned: tuple[Settings, Owner]) -> None:
    settings, owner = owned
    with pytest.raises(StoreLockedError):
        open_store(settings)  # a second writer is still refused
    owner.write(6)
    reader = open_store(settings, readonly=True)
    assert isinstance(reader, SharedStore)
    assert reader.collections() == ["c__m"] and reader.dim("c__m") == DIM
    assert reader.count("c__m") == 6 and reader.count("c__m", space="scene") == 3
    hits = reader.search("c__m", np.eye(DIM, dtype=np.float32)[2], limit=3)
    assert hits[0].id == "00000000-0000-0000-0000-000000000002" and hits[0].payload["i"] == 2
    assert [h.payload["space"] for h in reader.search("c__m", np.ones(DIM), 10, space="object")] == ["object"] * 3
    points = reader.retrieve("c__m", ["00000000-0000-0000-0000-000000000005"], with_vectors=True)
    assert points[0].vector is not None and int(np.argmax(points[0].vector)) == 5

    owner.write(4)  # ingest goes on: the next query sees it
    assert reader.count("c__m") == 10
    assert reader.dim("nope") is None
    with pytest.raises(UnknownCollectionError):
        reader.search("nope", np.ones(DIM), 1)
    with pytest.raises(VectorStoreError, match="can be read from here, not written"):
        reader.upsert("c__m", [], np.zeros((0, DIM), np.float16), [])


def test_the_query_file_is_private_and_gone_with_the_owner(owned: tuple[Settings, Owner], tmp_path: Path) -> None:
    settings, owner = owned
    query_file = settings.qdrant_path / QUERY_FILE
    assert stat.S_IMODE(query_file.stat().st_mode) == 0o600
    reader = open_store(settings, readonly=True)
    owner.stop()
    assert not query_file.exists()
    with pytest.raises(VectorStoreError, match="did not answer"):
        reader.collections()
    with open_store(settings, readonly=True) as store:  # the lock is free again: opened directly
        assert not isinstance(store, SharedStore) and store.count("c__m") == 0


def test_a_wrong_token_is_refused(owned: tuple[Settings, Owner]) -> None:
    settings, _ = owned
    good = open_store(settings, readonly=True)
    assert isinstance(good, SharedStore)
    forged = SharedStore(good.path, good._port, "not-the-token", good.owner)
    with pytest.raises(VectorStoreError, match="refused this reader's credentials"):
        forged.collections()

"""The dedup table, in memory and on disk: values round-trip, undo restores, changelog records
apply in order, the file is the process's own, and memory per key stays small (or flat on disk)."""

from __future__ import annotations

import gc
import os
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.fetch.dedup import table_file
from mediavec.settings import Settings
from streams.kvtable import KeyFilter, LocalTable, _digest, remove_orphans


@pytest.fixture(params=["memory", "disk"])
def table(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalTable]:
    t = LocalTable(tmp_path / "seen.sqlite" if request.param == "disk" else None)
    yield t
    t.close()


def test_values_round_trip_and_undo_restores_what_was_there(table: LocalTable) -> None:
    assert table.get("c|url|a") is None
    table.put_local("c|url|a", {"media_id": "m1", "at": 1.5})
    assert table.get("c|url|a") == {"media_id": "m1", "at": 1.5}
    table.put_local("c|url|a", {"media_id": "m2", "at": 2.0})
    table.restore_local("c|url|a", {"media_id": "m1", "at": 1.5})
    assert table.get("c|url|a") == {"media_id": "m1", "at": 1.5}
    table.restore_local("c|url|a", None)
    assert table.get("c|url|a") is None and len(table) == 0


def test_changelog_records_apply_in_order_and_tombstones_delete(table: LocalTable) -> None:
    table._apply_raw(
        [
            ("c|sha256|ff", b'{"media_id":"m\xc3\xa9","at":3}'),
            ("c|sha256|ee", b'{"media_id":"gone"}'),
            ("c|sha256|ee", None),
            ("c|sha256|dd", b'{"media_id":"old"}'),
            ("c|sha256|dd", b'{"media_id":"new"}'),
        ]
    )
    assert table.get("c|sha256|ff") == {"media_id": "mé", "at": 3}
    assert table.get("c|sha256|fe") is None  # a near key is another key
    assert table.get("c|sha256|ee") is None
    assert table.get("c|sha256|dd") == {"media_id": "new"}
    assert len(table) == 2


def test_the_file_is_a_cache_made_afresh_and_removed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "t" / "seen.sqlite"
    first = LocalTable(path)
    first.put_local("k", {"media_id": "m"})
    first.close()
    assert not path.exists()
    path.write_bytes(b"left by a crashed process")
    second = LocalTable(path)
    assert second.get("k") is None and len(second) == 0
    second.close()


def test_each_worker_gets_its_own_file_and_files_no_worker_holds_go(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    folder = tmp_path / "fetch"
    folder.mkdir()
    orphan = folder / f"seen-{os.getpid()}-0a1b2c3d.sqlite"  # a killed worker's, even with a pid in use
    orphan.write_bytes(b"")
    held = LocalTable(folder / "seen-1-0a1b2c3d.sqlite")  # a running worker's
    first, second = table_file(settings), table_file(settings)
    assert first is not None and second is not None and first != second  # two tables in one process
    assert first.parent == folder and first.name.startswith(f"seen-{os.getpid()}-")
    assert not orphan.exists() and (folder / "seen-1-0a1b2c3d.sqlite").exists()
    held.close()
    assert not (folder / "seen-1-0a1b2c3d.sqlite").exists()
    memory = settings.model_copy(update={"fetch": settings.fetch.model_copy(update={"seen_table": "memory"})})
    assert table_file(memory) is None


def test_an_open_table_file_cannot_be_swept_or_opened_twice(tmp_path: Path) -> None:
    path = tmp_path / "seen-7-00000000.sqlite"
    table = LocalTable(path)
    table.put_local("k", {"media_id": "m"})
    assert remove_orphans(tmp_path, "seen-*.sqlite") == []
    assert table.get("k") == {"media_id": "m"}
    table.close()


def _traced_per_key(table: LocalTable, n: int) -> float:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        table.put_local(f"collection-{i % 7}|url|{i:064x}", {"media_id": f"{i:032x}", "at": 1_764_000_000.0 + i})
    per_key = (tracemalloc.get_traced_memory()[0] - base) / n
    tracemalloc.stop()
    return per_key


def test_a_key_in_memory_costs_a_few_hundred_bytes_not_half_a_kilobyte() -> None:
    """The table keeps a key per media ever processed: its size per key is what sizing rests on."""
    table = LocalTable()
    per_key = _traced_per_key(table, 20_000)
    assert 60 < per_key < 260, per_key  # str keys with dict values took about 450
    table.close()


def test_on_disk_python_memory_does_not_grow_with_keys(tmp_path: Path) -> None:
    table = LocalTable(tmp_path / "seen.sqlite")
    per_key = _traced_per_key(table, 20_000)
    assert per_key < 5, per_key  # SQLite's page cache is not Python's and is capped at 8 MiB
    assert len(table) == 20_000
    table.close()


def test_the_key_filter_never_forgets_a_key_and_rarely_claims_one() -> None:
    keys = [_digest(f"c|url|{i}") for i in range(40_000)]
    filt = KeyFilter(first_capacity=1_000)  # so 40,000 keys take several layers
    for k in keys:
        filt.add(k)
    assert all(k in filt for k in keys)  # no false negatives, ever: the table trusts "not in"
    strangers = [_digest(f"c|sha256|{i}") for i in range(40_000)]
    false_positives = sum(k in filt for k in strangers) / len(strangers)
    assert false_positives < 0.03, false_positives  # about 0.3 % a layer, six layers here


def test_on_disk_a_key_never_written_is_answered_without_the_lock_or_a_query(tmp_path: Path) -> None:
    """Most lookups are of new media: they must not wait for the changelog follower's writes."""
    table = LocalTable(tmp_path / "seen.sqlite")
    table.put_many_local([("c|url|a", {"media_id": "m1"}), ("c|sha256|b", {"media_id": "m1"})])
    assert table.get_many(["c|url|a", "c|url|new", "c|sha256|b"]) == [{"media_id": "m1"}, None, {"media_id": "m1"}]
    answers: list[object] = []
    with table._lock:  # a writer holds the table
        reader = threading.Thread(target=lambda: answers.append(table.get_many(["c|url|new", "c|sha256|new"])))
        reader.start()
        reader.join(5)
        assert not reader.is_alive(), "a key never written waited for the lock"
    assert answers == [[None, None]]
    table.restore_local("c|url|a", None)  # deleted: the filter still says "maybe", the store says no
    assert table.get("c|url|a") is None and table.get("c|sha256|b") == {"media_id": "m1"}
    table.close()

"""Alias books: the embedded file and Qdrant's own aliases (through qdrant-client local mode)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mediavec.aliases import AliasBook, FileAliases, QdrantAliases
from mediavec.replay import parse_time
from schemas.collections import collection_for, model_from_collection
from stores.vectorstore.server import ServerStore


def _exercise(book: AliasBook) -> None:
    assert book.all() == {} and book.get("shop") is None
    assert book.switch("shop", "shop-v1__m") is None
    assert book.switch("shop", "shop-v2__m") == "shop-v1__m"
    assert book.get("shop") == "shop-v2__m"
    book.delete("shop")
    assert book.get("shop") is None


def test_file_aliases(tmp_path: Path) -> None:
    _exercise(FileAliases(tmp_path))
    FileAliases(tmp_path).switch("a", "b__m")
    assert FileAliases(tmp_path).all() == {"a": "b__m"}  # durable, read by another instance


def test_qdrant_aliases_through_local_mode(tmp_path: Path) -> None:
    store = ServerStore.local(tmp_path)
    try:
        for name in ("shop-v1__m", "shop-v2__m"):
            store.ensure_collection(name, 4)
            store.upsert(name, ["00000000-0000-0000-0000-000000000001"], np.ones((1, 4), np.float16), [{"v": name}])
        _exercise(QdrantAliases(store._client))
    finally:
        store.close()


def test_model_reads_back_from_the_collection_name() -> None:
    name = collection_for("shop-v2", "open_clip/ViT-B-16/random-seed0")
    assert model_from_collection(name) == "open_clip/ViT-B-16/random-seed0"
    assert model_from_collection("plain") is None


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1700000000", 1_700_000_000_000),
        ("2023-11-14T22:13:20", 1_700_000_000_000),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000_000),
    ],
)
def test_parse_time(text: str, ms: int) -> None:
    assert parse_time(text) == ms

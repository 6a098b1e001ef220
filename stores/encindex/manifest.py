"""The store's own bookkeeping: which shards each collection has (the sink's offsets: offsets.py).

``manifest.json`` is written atomically (tmp, fsync, rename, fsync the directory), so a reader
sees the old or the new version whole. It changes when a shard opens, is sealed or is trained,
or when a rekey moves the store to a new generation. It holds no vector, id or payload, and no
key: only collection names, engine index names, counts at training time and the key id (a
public fingerprint, see :class:`stores.encindex.keys.IndexKey`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stores.vectorstore.base import VectorStoreError
from stores.vectorstore.lock import write_atomic

MANIFEST_FILE = "manifest.json"
FORMAT = 1


@dataclass
class ShardState:
    """One engine index holding part of a collection."""

    index: str
    trained_count: int = 0  # vectors held when the last successful training began (0: never)
    failed_count: int = 0  # vectors held when the last failed training began (0: none failed)
    sealed: bool = False  # no new ids go here any more (overwrites of its own ids still do)


@dataclass
class CollectionState:
    dim: int
    shards: list[ShardState] = field(default_factory=list)


@dataclass
class Manifest:
    key_id: str
    generation: int = 1
    collections: dict[str, CollectionState] = field(default_factory=dict)
    retired: list[str] = field(default_factory=list)  # earlier generation's indexes still to delete
    retired_key_id: str = ""
    rekey_to: dict[str, Any] | None = None  # {"generation", "key_id"} while a rekey is under way

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        doc = json.loads(data)
        if doc.pop("format", None) != FORMAT:
            raise VectorStoreError(f"unsupported encrypted index manifest format (this code reads {FORMAT})")
        collections = {
            name: CollectionState(int(c["dim"]), [ShardState(**s) for s in c["shards"]])
            for name, c in doc.pop("collections").items()
        }
        return cls(collections=collections, **doc)


def shard_index_name(collection: str, generation: int, ordinal: int) -> str:
    """Engine index name of one shard; readable on disk (see docs/encrypted-index.md)."""
    return f"{collection}__g{generation}__s{ordinal:04d}"


def load_manifest(root: Path) -> Manifest | None:
    path = root / MANIFEST_FILE
    if not path.exists():
        return None
    try:
        return Manifest.from_json(path.read_bytes())
    except (ValueError, KeyError, TypeError) as exc:
        raise VectorStoreError(f"{path} is not a readable encrypted index manifest: {exc}") from exc


def save_manifest(root: Path, manifest: Manifest) -> None:
    write_atomic(root / MANIFEST_FILE, manifest.to_json())

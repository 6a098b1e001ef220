"""Key rotation: re-encrypt the whole store under a new key by rebuilding it as a new generation.

cyborgdb-core 0.18 has no way to re-wrap an index under a new root key: an index's data key is
wrapped under the key given to ``create_index`` for good. Its per-user keys (``create_user_keys``)
only add wraps of the *same* data key, and creating them needs the root key, which the sink must
hold anyway to open new shards; its KMS helpers store a KMS-wrapped copy of the key for a
service layer. So rotation is a rebuild (see docs/encrypted-index.md):

1. record ``rekey_to`` (target generation, new key id) in the manifest: the store refuses to open
   until the rekey has finished;
2. copy every shard, item by item (id, fp16 vector, encrypted payload bytes), from ``..__g<N>__``
   into ``..__g<N+1>__`` created under the new key (a fresh data key), and train the copy if the
   original was trained;
3. switch the manifest to generation N+1 and the new key id, listing the old indexes as retired:
   this rename is the commit point;
4. delete the retired indexes with the old key.

Run it with the sink stopped (it takes the directory lock). Every step is idempotent, so an
interrupted rekey is finished by running the same command again with the same two keys.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stores.encindex.config import UPSERT_CHUNK, EncIndexSettings
from stores.encindex.keys import IndexKey
from stores.encindex.manifest import CollectionState, Manifest, ShardState, load_manifest, save_manifest
from stores.encindex.manifest import shard_index_name as index_name
from stores.encindex.shards import EngineError, Shard, WrongKeyError, open_client
from stores.encindex.store import BACKEND
from stores.vectorstore.base import VectorStoreError
from stores.vectorstore.lock import DirLock

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RekeyReport:
    generation: int
    shards: int
    items: int
    deleted: int


def rekey(path: Path, old: IndexKey, new: IndexKey, enc: EncIndexSettings) -> RekeyReport:
    """Re-encrypt the store at ``path`` from ``old`` to ``new``; resumable, see the module docstring."""
    if old == new:
        raise VectorStoreError("the new index key is the old one")
    lock = DirLock(Path(path), BACKEND)
    try:
        manifest = load_manifest(Path(path))
        if manifest is None:
            raise VectorStoreError(f"no encrypted store at {path}")
        client = open_client(str(Path(path) / "engine"), enc.cpu_threads)
        shards = items = 0
        if manifest.key_id != new.key_id:
            manifest, shards, items = _rebuild(Path(path), client, manifest, old, new)
        deleted = _purge_retired(Path(path), client, manifest, old)
        logger.info("store %s now at generation %d under key id %s", path, manifest.generation, new.key_id)
        return RekeyReport(manifest.generation, shards, items, deleted)
    finally:
        lock.release()


def _rebuild(path: Path, client: Any, manifest: Manifest, old: IndexKey, new: IndexKey) -> tuple[Manifest, int, int]:
    if manifest.key_id != old.key_id:
        raise WrongKeyError(f"the store is encrypted under key id {manifest.key_id}, the old key given is {old.key_id}")
    target = manifest.generation + 1
    if manifest.rekey_to is not None and manifest.rekey_to.get("key_id") != new.key_id:
        raise VectorStoreError(
            f"an interrupted rekey was going to key id {manifest.rekey_to.get('key_id')}: rerun it with that key"
        )
    manifest.rekey_to = {"generation": target, "key_id": new.key_id}
    save_manifest(path, manifest)
    collections: dict[str, CollectionState] = {}
    shards = items = 0
    for name, coll in manifest.collections.items():
        states = []
        for ordinal, state in enumerate(coll.shards, 1):
            src = Shard.load(client, state.index, old)
            dst = Shard.create(client, index_name(name, target, ordinal), coll.dim, new)
            items += _copy(src, dst)
            states.append(_train_like(src, dst, state))
            shards += 1
        collections[name] = CollectionState(coll.dim, states)
    retired = [s.index for c in manifest.collections.values() for s in c.shards]
    switched = Manifest(new.key_id, target, collections, retired=retired, retired_key_id=old.key_id)
    save_manifest(path, switched)  # the commit point
    logger.info("rekeyed %d shards (%d items) into generation %d", shards, items, target)
    return switched, shards, items


def _copy(src: Shard, dst: Shard) -> int:
    """Copy every item, encrypted payload bytes unchanged; an overwrite when resumed."""
    ids = src.list_ids()
    for lo in range(0, len(ids), UPSERT_CHUNK):
        rows = src.fetch_raw(ids[lo : lo + UPSERT_CHUNK], with_vectors=True)
        vectors = np.stack([v for _, v, _ in rows if v is not None]).astype(np.float32, copy=False)
        dst.upsert([i for i, _, _ in rows], vectors, [c for _, _, c in rows])
    if dst.count != src.count:
        raise VectorStoreError(f"copy of {src.name} holds {dst.count} items, the original {src.count}")
    return src.count


def _train_like(src: Shard, dst: Shard, state: ShardState) -> ShardState:
    trained = 0
    if src.training_state() == "trained" and dst.train_here():
        trained = dst.count
    return ShardState(dst.name, trained_count=trained, sealed=state.sealed)


def _purge_retired(path: Path, client: Any, manifest: Manifest, old: IndexKey) -> int:
    if not manifest.retired:
        return 0
    if manifest.retired_key_id != old.key_id:
        raise WrongKeyError(f"the retired indexes are under key id {manifest.retired_key_id}, not {old.key_id}")
    deleted = 0
    for index in list(manifest.retired):
        try:
            Shard.load(client, index, old).delete()
            deleted += 1
        except EngineError as exc:
            if "does not exist" not in str(exc):
                raise
        manifest.retired.remove(index)
        save_manifest(path, manifest)
    manifest.retired_key_id = ""
    save_manifest(path, manifest)
    return deleted

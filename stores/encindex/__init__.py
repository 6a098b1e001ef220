"""The encrypted vector index: cyborgdb-core's encrypted DiskIVF indexes, sharded, embedded.

- :mod:`stores.encindex.keys`: the 32-byte index key (file or variable; never logged).
- :mod:`stores.encindex.store`: :class:`EncryptedStore`, the :class:`~stores.vectorstore.VectorStore`
  the encrypted sink writes and searches read; :func:`merge_hits` ranks its hits with Qdrant's.
- :mod:`stores.encindex.shards`: one engine index per shard, and the background trainer.
- :mod:`stores.encindex.rekey`: key rotation by rebuilding under the new key.

See docs/encrypted-index.md for key handling and rotation. The engine (a 43 MB extension) is
imported when a store is opened, not when this package is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stores.encindex.config import EncIndexSettings, encindex_settings, store_path
from stores.encindex.hits import merge_hits
from stores.encindex.keys import IndexKey, IndexKeyError, generate_key, load_key, parse_key, write_key_file
from stores.vectorstore.base import Hit, StoreLockedError, VectorStore

if TYPE_CHECKING:
    from stores.encindex.store import EncryptedStore
    from stores.settings import StoresSettings

__all__ = [
    "EncIndexSettings",
    "Hit",
    "IndexKey",
    "IndexKeyError",
    "encindex_settings",
    "generate_key",
    "load_key",
    "merge_hits",
    "open_encrypted_reader",
    "open_encrypted_store",
    "parse_key",
    "write_key_file",
]


def open_encrypted_store(settings: StoresSettings, enc: EncIndexSettings | None = None) -> EncryptedStore:
    """The encrypted store the settings name, with its key loaded from the configured source.

    The opener also serves the store's reads to other processes that hold the same key
    (:mod:`stores.encindex.shared`), until it closes the store.
    """
    from stores.encindex.shared import serve_reads
    from stores.encindex.store import EncryptedStore

    enc = enc or encindex_settings(settings)
    key = load_key(enc.key_file, enc.key_env)
    store = EncryptedStore(store_path(settings, enc), key, enc)
    try:
        store.query_server = serve_reads(store, key)
    except BaseException:
        store.close()
        raise
    return store


def open_encrypted_reader(settings: StoresSettings, enc: EncIndexSettings | None = None) -> VectorStore:
    """The encrypted store to read: opened here, or read through the process that holds it."""
    from stores.encindex.shared import SharedEncryptedStore

    try:
        return open_encrypted_store(settings, enc)
    except StoreLockedError as locked:
        enc = enc or encindex_settings(settings)
        return SharedEncryptedStore.connect(store_path(settings, enc), load_key(enc.key_file, enc.key_env), locked)

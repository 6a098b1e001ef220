"""The encrypted index answers other processes' reads, as the embedded Qdrant store does.

The process that opens the encrypted store (the sink, in a running pipeline) serves its reads on a
loopback port (:class:`stores.vectorstore.shared.QueryServer`). Unlike the Qdrant store, the query
file holds no token: it holds a nonce, and the token is HMAC-SHA256(index key, nonce). A reader
must hold the index key itself to be answered, so the decrypted payloads reach no process that
could not have opened the store.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stores.encindex.keys import IndexKey
from stores.vectorstore.base import Hit, StoreLockedError, VectorStore, VectorStoreError
from stores.vectorstore.filters import SearchFilter
from stores.vectorstore.shared import NotAuthorised, QueryServer, RemoteReads, await_query_file, read_query_file

if TYPE_CHECKING:
    from stores.encindex.store import EncryptedStore

logger = logging.getLogger(__name__)

_TOKEN_INFO = b"mediavec/encindex-query/v1/"


def query_token(key: IndexKey, nonce: str) -> str:
    return hmac.new(key.reveal(), _TOKEN_INFO + nonce.encode(), hashlib.sha256).hexdigest()


def serve_reads(store: EncryptedStore, key: IndexKey) -> QueryServer:
    """Serve ``store``'s reads to the holders of ``key``; the caller stops the server before closing."""
    nonce = secrets.token_hex(16)
    return QueryServer(store, store.path, query_token(key, nonce), {"nonce": nonce}).start()


class SharedEncryptedStore(RemoteReads, VectorStore):
    """Another process's encrypted store, read through the reads its owner serves."""

    @classmethod
    def connect(cls, path: Path, key: IndexKey, locked: StoreLockedError) -> SharedEncryptedStore:
        """The owner's reads, ``locked`` again when it serves none (yet), an error when it holds another key."""
        await_query_file(path)
        try:
            info = read_query_file(path)
            store = cls(path, int(info["port"]), query_token(key, str(info["nonce"])), int(info["pid"]))
            store.collections()  # one round trip: the owner answers, and accepts our key
        except NotAuthorised:
            raise VectorStoreError(
                f"the encrypted store {path} is open in pid {info['pid']} under another index key than this one"
            ) from None
        except (OSError, ValueError, KeyError, VectorStoreError) as exc:
            logger.debug("no query service for %s: %s", path, exc)
            raise locked from None
        logger.debug("reading encrypted store %s through its owner, pid %d", path, store.owner)
        return store

    def search(self, name: str, vector: np.ndarray, limit: int = 10, *, where: SearchFilter | None = None) -> list[Hit]:
        vector_list = np.asarray(vector, np.float32).tolist()
        wire = where.to_json() if where else None
        return self._hits(self._call("search", name=name, vector=vector_list, limit=limit, where=wire))

    def count(self, name: str) -> int:
        return int(self._call("count", name=name))

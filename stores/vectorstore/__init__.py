"""Where the Qdrant sink writes vectors and the search command reads them.

:func:`open_store` picks the backend from the settings: a Qdrant server when
``MEDIAVEC_QDRANT__URL`` is set, otherwise an embedded store at ``StoresSettings.qdrant_path``:
qdrant-edge by default (about 20x the durable write rate of qdrant-client's local mode here, see
``loadtest/bench_vectorstore.py``), or qdrant-client local mode with ``MEDIAVEC_QDRANT__BACKEND=local``.

The backends (:class:`stores.vectorstore.edge.EdgeStore`,
:class:`stores.vectorstore.server.ServerStore`) are imported when a store is opened, so that
importing this package for its types stays cheap (qdrant-client alone takes about half a second).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stores.vectorstore.base import (
    OFFSETS_COLLECTION,
    SPACE_FIELD,
    DimensionMismatchError,
    Hit,
    Offsets,
    QdrantStore,
    StoredPoint,
    StoreLockedError,
    UnknownCollectionError,
    VectorStore,
    VectorStoreError,
)

if TYPE_CHECKING:
    from stores.settings import StoresSettings


__all__ = [
    "OFFSETS_COLLECTION",
    "SPACE_FIELD",
    "DimensionMismatchError",
    "Hit",
    "Offsets",
    "QdrantStore",
    "StoreLockedError",
    "StoredPoint",
    "UnknownCollectionError",
    "VectorStore",
    "VectorStoreError",
    "open_store",
]


def open_store(settings: StoresSettings) -> QdrantStore:
    """The vector store the settings name; the caller closes it (or uses it as a context manager)."""
    qdrant = settings.qdrant
    if qdrant.url:
        from stores.vectorstore.server import ServerStore

        return ServerStore.connect(qdrant)
    if qdrant.backend == "local":
        from stores.vectorstore.server import ServerStore

        return ServerStore.local(settings.qdrant_path)
    from stores.vectorstore.edge import EdgeStore

    return EdgeStore(settings.qdrant_path)

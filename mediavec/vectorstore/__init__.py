"""Where the Qdrant sink writes vectors and the search command reads them.

:func:`open_store` picks the backend from the settings: a Qdrant server when
``MEDIAVEC_QDRANT__URL`` is set, otherwise an embedded store at ``Settings.qdrant_path``:
qdrant-edge by default (about 20x the durable write rate of qdrant-client's local mode here, see
``loadtest/bench_vectorstore.py``), or qdrant-client local mode with ``MEDIAVEC_QDRANT__BACKEND=local``.

The backends (:class:`mediavec.vectorstore.edge.EdgeStore`,
:class:`mediavec.vectorstore.server.ServerStore`) are imported when a store is opened, so that
importing this package for its types stays cheap (qdrant-client alone takes about half a second).
"""

from __future__ import annotations

from mediavec.vectorstore.base import (
    OFFSETS_COLLECTION,
    SPACE_FIELD,
    SPACES,
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
from streams.settings import Settings

__all__ = [
    "OFFSETS_COLLECTION",
    "SPACES",
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


def open_store(settings: Settings) -> QdrantStore:
    """The vector store the settings name; the caller closes it (or uses it as a context manager)."""
    qdrant = settings.qdrant
    if qdrant.url:
        from mediavec.vectorstore.server import ServerStore

        return ServerStore.connect(qdrant)
    if qdrant.backend == "local":
        from mediavec.vectorstore.server import ServerStore

        return ServerStore.local(settings.qdrant_path)
    from mediavec.vectorstore.edge import EdgeStore

    return EdgeStore(settings.qdrant_path)

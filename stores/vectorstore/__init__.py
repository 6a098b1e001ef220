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
from stores.vectorstore.filters import FilterError, SearchFilter

if TYPE_CHECKING:
    from stores.settings import StoresSettings


__all__ = [
    "OFFSETS_COLLECTION",
    "SPACE_FIELD",
    "DimensionMismatchError",
    "FilterError",
    "Hit",
    "Offsets",
    "QdrantStore",
    "SearchFilter",
    "StoreLockedError",
    "StoredPoint",
    "UnknownCollectionError",
    "VectorStore",
    "VectorStoreError",
    "open_store",
]


def open_store(settings: StoresSettings, *, readonly: bool = False) -> QdrantStore:
    """The vector store the settings name; the caller closes it (or uses it as a context manager).

    An embedded store is opened by one process, which then also serves other processes' queries
    (:mod:`stores.vectorstore.shared`). With ``readonly``, a store another process holds is read
    through that process instead of failing with :class:`StoreLockedError`.
    """
    qdrant = settings.qdrant
    if qdrant.url:
        from stores.vectorstore.server import ServerStore

        return ServerStore.connect(qdrant)
    from stores.vectorstore.shared import SharedStore, serve_queries

    path = settings.qdrant_path
    try:
        if qdrant.backend == "local":
            from stores.vectorstore.server import ServerStore

            store: QdrantStore = ServerStore.local(path)
        else:
            from stores.vectorstore.edge import EdgeStore

            store = EdgeStore(
                path,
                optimize_after_points=qdrant.optimize_after_points,
                optimize_growth=qdrant.optimize_growth,
                hnsw_ef=qdrant.hnsw_ef,
            )
    except StoreLockedError as locked:
        if not readonly:
            raise
        return SharedStore.connect(path, locked)
    return serve_queries(store, path)

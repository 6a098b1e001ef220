"""The vector store contract the Qdrant sink and the search command use, whatever the backend.

Commit order (see DESIGN.md, "Exactly-once"): the sink calls :meth:`VectorStore.upsert`, which
returns only once the points are durable (acknowledged by the server, or flushed to disk by an
embedded backend), and then :meth:`VectorStore.save_offsets`, which returns only once the offsets
are durable too. A crash between the two replays the batch on restart; the point ids are
deterministic (:func:`schemas.ids.point_id`), so the replay overwrites instead of duplicating.

Collections use cosine distance, so the stored vectors are the unit-normalised inputs: a vector
read back equals the normalised input within fp16 rounding.

Vector spaces: a Qdrant collection holds every space one model produces (the vision model's
scene, object and text vectors share one), told apart by the payload field ``space``;
:class:`QdrantStore` searches and counts can filter on it, and both backends keep a keyword index
on it. A query wider than the collection is truncated and renormalised to the stored dimension
(the stored vectors were cut the same way, see ``ModelSettings.store_dim``).
"""

from __future__ import annotations

import re
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from schemas.spaces import ALL_SPACES
from streams.offsets import Offsets  # (topic, partition) -> the next offset to read

if TYPE_CHECKING:
    from stores.vectorstore.filters import SearchFilter

OFFSETS_COLLECTION = "_mediavec_offsets"  # the server backend's offsets; reserved
SPACE_FIELD = "space"  # the payload field naming a point's vector space
OFFSETS_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://mediavec.dev/sink-offsets/v1")
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$")  # no leading dot: hidden files are ours
# str(uuid.UUID(x)) == x exactly for these; the ids the sinks write are already in this form.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class VectorStoreError(Exception):
    """A vector store refused an operation; the message says why."""


class DimensionMismatchError(VectorStoreError):
    """A collection exists with another dimension (or distance) than the one asked for."""


class UnknownCollectionError(VectorStoreError):
    """The collection does not exist (call ensure_collection first)."""


class StoreLockedError(VectorStoreError):
    """Another process has the embedded store directory open."""


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class StoredPoint:
    """One point read back by id; vector is float32 (normalised) or None when not asked for."""

    id: str
    vector: np.ndarray | None
    payload: dict[str, Any]


class VectorStore(ABC):
    """A set of named collections of fp16 vectors plus the sink's applied Kafka offsets."""

    @abstractmethod
    def ensure_collection(self, name: str, dim: int) -> None:
        """Create the collection (cosine) if missing; raise DimensionMismatchError if it differs."""

    @abstractmethod
    def upsert(self, name: str, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> None:
        """Insert or overwrite points; returns once they are durable."""

    @abstractmethod
    def search(self, name: str, vector: np.ndarray, limit: int = 10, *, where: SearchFilter | None = None) -> list[Hit]:
        """The nearest points to one vector that meet ``where``, best first."""

    @abstractmethod
    def count(self, name: str) -> int:
        """Exact number of points in the collection."""

    @abstractmethod
    def dim(self, name: str) -> int | None:
        """The collection's vector dimension, or None when there is no such collection."""

    @abstractmethod
    def retrieve(self, name: str, ids: list[str], with_vectors: bool = True) -> list[StoredPoint]:
        """The points among ids that exist, in the order asked."""

    @abstractmethod
    def collections(self) -> list[str]:
        """Names of the vector collections, sorted (internal ones left out)."""

    @abstractmethod
    def delete_collection(self, name: str) -> None:
        """Drop a collection and its points; a missing one is not an error."""

    @abstractmethod
    def load_offsets(self, consumer: str) -> Offsets:
        """The offsets save_offsets last recorded for this consumer (empty when none)."""

    @abstractmethod
    def save_offsets(self, consumer: str, offsets: Offsets) -> None:
        """Record offsets (merged over earlier ones); returns once they are durable."""

    @abstractmethod
    def close(self) -> None:
        """Release files, locks and connections. Idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class QdrantStore(VectorStore):
    """A vector store whose collections hold several vector spaces (the Qdrant backends).

    The space filter is a keyword-only extension of :meth:`VectorStore.search`, so the encrypted
    index (one collection per space) still satisfies the base contract.
    """

    @abstractmethod
    def search(
        self,
        name: str,
        vector: np.ndarray,
        limit: int = 10,
        *,
        space: str | None = None,
        where: SearchFilter | None = None,
    ) -> list[Hit]:
        """The nearest points to one vector, best first; only points of ``space`` (when given) that meet ``where``."""

    @abstractmethod
    def count(self, name: str, *, space: str | None = None, where: SearchFilter | None = None) -> int:
        """Exact number of points in the collection (of ``space`` and meeting ``where`` when given)."""

    def spaces(self, name: str) -> dict[str, int]:
        """The vector spaces the collection holds, with their point counts (empty ones left out)."""
        counts = {space: self.count(name, space=space) for space in ALL_SPACES}
        return {space: n for space, n in counts.items() if n}


def check_name(name: str) -> str:
    """Collection names double as directory names in the edge backend: keep them plain."""
    if not _NAME.match(name):
        raise VectorStoreError(f"invalid collection name {name!r}: use letters, digits, '_', '-', '.'")
    return name


def check_consumer(consumer: str) -> str:
    """Consumer names (Kafka group ids) become file names in the edge backend."""
    if not _NAME.match(consumer):
        raise VectorStoreError(f"invalid consumer name {consumer!r}: use letters, digits, '_', '-', '.'")
    return consumer


def canonical_ids(ids: list[str]) -> list[str]:
    """Ids in canonical UUID spelling, so 'ABC…' and 'abc…' name one point in every backend."""
    canonical = _CANONICAL_UUID.fullmatch
    try:  # a regex match costs an eighth of parsing and printing a UUID, per id of every upsert
        return [i if isinstance(i, str) and canonical(i) else str(uuid.UUID(i)) for i in ids]
    except (ValueError, AttributeError, TypeError) as exc:
        raise VectorStoreError(f"point ids must be UUID strings: {exc}") from exc


def check_batch(ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]], dim: int) -> np.ndarray:
    """Validate one upsert and return the vectors as float32 rows (what both clients take)."""
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise DimensionMismatchError(f"vectors have shape {vectors.shape}, the collection wants (n, {dim})")
    if not (len(ids) == vectors.shape[0] == len(payloads)):
        raise VectorStoreError(f"{len(ids)} ids, {vectors.shape[0]} vectors and {len(payloads)} payloads")
    if len(set(ids)) != len(ids):
        raise VectorStoreError("duplicate ids in one upsert (keep the last one before calling)")
    out = np.asarray(vectors, dtype=np.float32)
    if not np.isfinite(out).all():
        raise VectorStoreError("vectors contain NaN or infinity")
    return out


def check_space(space: str | None) -> str | None:
    if space is not None and space not in ALL_SPACES:
        raise VectorStoreError(f"unknown vector space {space!r}: one of {', '.join(ALL_SPACES)}")
    return space


def fit_query(vector: np.ndarray, dim: int) -> np.ndarray:
    """The query as a float32 vector of the collection's dimension.

    A wider query is truncated to its first ``dim`` components and renormalised, which is how
    the stored vectors were cut (Matryoshka); a narrower one cannot be made to fit.
    """
    flat = np.asarray(vector, dtype=np.float32).reshape(-1)
    if flat.shape[0] < dim:
        raise DimensionMismatchError(f"query has {flat.shape[0]} dimensions, the collection has {dim}")
    if not np.isfinite(flat).all():
        raise VectorStoreError("the query vector contains NaN or infinity")
    if flat.shape[0] > dim:  # the same cut as models.textmodel.truncate
        flat = flat[:dim] / max(float(np.linalg.norm(flat[:dim])), 1e-12)
    return flat


def check_query(vector: np.ndarray, dim: int) -> list[float]:
    """:func:`fit_query` as the list of floats both Qdrant clients take."""
    return [float(x) for x in fit_query(vector, dim)]


def offset_point_id(consumer: str, topic: str, partition: int) -> str:
    """Deterministic id of one (consumer, topic, partition) offset record."""
    return str(uuid.uuid5(OFFSETS_NAMESPACE, f"{consumer}|{topic}|{partition}"))


def check_offsets(offsets: Offsets) -> Offsets:
    for (topic, partition), offset in offsets.items():
        if not topic or partition < 0 or offset < 0:
            raise VectorStoreError(f"invalid offset {topic!r}[{partition}] = {offset}")
    return offsets

"""The base of the sinks of the vectors topic: everything a sink does but its store writes.

A sink is driven by :class:`streams.sink_runner.StoreSinkRunner` (the ``StoreSink`` protocol):
``start``, then per poll ``split`` and ``write``, ``load_offsets`` on every assignment, ``close``.
:class:`VectorSink` implements that protocol once:

- lifecycle: ``start`` opens the store (inside the worker process), ``close`` closes it; the
  store's consumer name is ``<topic prefix>mediavec.<sink name>``, so each sink keeps its own
  offsets in a store it may share with another sink.
- ``split`` decodes each record once: an undecodable one is an ``invalid_vector_batch`` failure
  (the runner dead-letters it), a batch with no vectors needs no write (its offset still
  advances), and the sink's own check (:meth:`VectorSink.refuse`) may refuse a decoded batch.
  The decoded batches are kept for the ``write`` that follows, which decodes only what ``split``
  did not see (a caller that writes without splitting, or a retry).
- ``groups`` gathers a poll's rows by the collection they are stored in
  (:func:`group_rows`, names from :mod:`schemas.collections`).
- offsets: ``load_offsets`` reads what the sink recorded; ``write`` hands the sink its records
  and the next offsets to record with them. ``write([], offsets)`` records offsets only: the
  runner's probe that the store is up before it dead-letters a record that failed alone.

A concrete sink is only its store: :meth:`VectorSink.open_store`, :meth:`VectorSink.stored_offsets`
and :meth:`VectorSink.write_polled` (write the rows, then the offsets, durably).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import numpy as np

from consumers.settings import ConsumerSettings
from schemas import SchemaError, VectorBatch, VectorRow, decode_vector_batch
from schemas.collections import collection_for, row_payload
from streams.offsets import Offsets
from streams.stage import Failure, InputRecord, TopicKey

logger = logging.getLogger(__name__)

Split = tuple[list[InputRecord], list[tuple[InputRecord, Failure]]]


class Decoded(NamedTuple):
    """A polled record and the vector batch it carries."""

    record: InputRecord
    batch: VectorBatch


@dataclass(frozen=True)
class CollectionUpsert:
    """Everything one collection receives from a poll: rows i of ids, vectors and payloads match."""

    name: str
    dim: int
    ids: list[str]
    vectors: np.ndarray  # (len(ids), dim) float16
    payloads: list[dict[str, Any]]


class MixedDimensionError(ValueError):
    """Two batches for one collection carry vectors of different dimensions (a producer bug)."""


def group_rows(
    batches: Iterable[VectorBatch], name_of: Callable[[VectorBatch, VectorRow], str]
) -> dict[str, CollectionUpsert]:
    """Group the rows of a poll's batches by collection, keeping the last copy of a point id seen twice.

    A replay within one poll (a restart that re-reads what was already polled) yields the same
    point ids again; an upsert must not carry an id twice, and the later copy is the newer one.
    """
    rows: dict[str, dict[str, tuple[np.ndarray, dict[str, Any]]]] = {}
    dims: dict[str, int] = {}
    for batch in batches:
        for vector, row in zip(batch.vectors, batch.rows, strict=True):
            name = name_of(batch, row)
            if dims.setdefault(name, batch.dim) != batch.dim:
                raise MixedDimensionError(f"collection {name!r}: a batch of dimension {batch.dim} after {dims[name]}")
            group = rows.setdefault(name, {})
            group.pop(row.point_id, None)  # re-insert so order follows the last occurrence
            group[row.point_id] = (vector, row_payload(batch, row))
    return {name: _upsert(name, dims[name], group) for name, group in rows.items()}


def _upsert(name: str, dim: int, group: dict[str, tuple[np.ndarray, dict[str, Any]]]) -> CollectionUpsert:
    vectors = np.stack([v for v, _ in group.values()]).astype(np.float16, copy=False)
    return CollectionUpsert(name, dim, list(group), vectors.reshape(len(group), dim), [p for _, p in group.values()])


def dimension_mismatch(batch: VectorBatch, collection: str, held: int) -> Failure:
    """The failure of a batch whose vectors do not fit the dimension its collection holds."""
    reason = f"{batch.dim}-d vectors for collection {collection}, which holds {held}-d vectors"
    return Failure("dimension_mismatch", reason, media_id=batch.rows[0].media_id)


class Closable(Protocol):
    def close(self) -> None: ...


S = TypeVar("S", bound=Closable)


class VectorSink(ABC, Generic[S]):
    """A sink of the vectors topic into one store ``S``; subclasses write, this does the rest."""

    name: str  # the stage name and input topic, read from consumers.registry
    input_topic: TopicKey

    def __init__(self, settings: ConsumerSettings) -> None:
        self.settings = settings
        self.consumer_name = f"{settings.topics.prefix}mediavec.{self.name}"
        self._store: S | None = None
        self._decoded: dict[tuple[str, int, int], VectorBatch] = {}  # split's work, reused by write

    @property
    def store(self) -> S:
        if self._store is None:
            raise RuntimeError("sink not started")
        return self._store

    def start(self) -> None:
        self._store = self.open_store()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        self._decoded.clear()

    def load_offsets(self) -> Offsets:
        """The next offsets this sink recorded in its store (the runner seeks to them)."""
        return self.stored_offsets()

    def split(self, records: Sequence[InputRecord]) -> Split:
        """Decode each record once; separate the batches to write from the failures to dead-letter."""
        self._decoded.clear()
        good: list[InputRecord] = []
        bad: list[tuple[InputRecord, Failure]] = []
        claimed: dict[str, int] = {}  # dimensions of the collections this poll will create
        for r in records:
            try:
                batch = decode_vector_batch(r.value)
            except SchemaError as exc:
                bad.append((r, Failure("invalid_vector_batch", str(exc))))
                continue
            if not batch.rows:
                continue  # nothing to store (a frame with no vectors)
            failure = self.refuse(Decoded(r, batch), claimed)
            if failure is not None:
                bad.append((r, failure))
                continue
            self._decoded[_key(r)] = batch
            good.append(r)
        return good, bad

    def write(self, records: Sequence[InputRecord], offsets: Offsets) -> None:
        """Write ``records`` durably, then record ``offsets`` (next offset per partition) in the store."""
        polled = [Decoded(r, self._batch(r)) for r in records]
        self._decoded.clear()
        self.write_polled(polled, offsets)

    def groups(self, polled: Iterable[Decoded]) -> dict[str, CollectionUpsert]:
        """The poll's rows by the collection this sink stores them in."""
        return group_rows((p.batch for p in polled), self.collection)

    def collection(self, batch: VectorBatch, row: VectorRow) -> str:
        """The collection a row is stored in: one per request collection and model."""
        return collection_for(batch.collection, batch.model)

    def refuse(self, polled: Decoded, claimed: dict[str, int]) -> Failure | None:
        """Why the store would refuse a decoded batch (it goes to the DLQ), or None.

        ``claimed`` maps the collections this poll will create to their dimension, so that two
        batches of one poll cannot create one collection with two dimensions.
        """
        return None

    @abstractmethod
    def open_store(self) -> S:
        """Open the store (called by ``start``, inside the worker process)."""

    @abstractmethod
    def stored_offsets(self) -> Offsets:
        """The offsets recorded under ``consumer_name``."""

    @abstractmethod
    def write_polled(self, polled: list[Decoded], offsets: Offsets) -> None:
        """Write the decoded records and then the offsets; return once both are durable."""

    def _batch(self, r: InputRecord) -> VectorBatch:
        cached = self._decoded.get(_key(r))
        return cached if cached is not None else decode_vector_batch(r.value)


def _key(r: InputRecord) -> tuple[str, int, int]:
    return (r.topic, r.partition, r.offset)

"""The edge store in qdrant-edge's own terms: shard config, payload indexes, search params, filters.

Kept apart from :mod:`stores.vectorstore.edge` (the store: shards, offsets, rebuilds) so that the
engine settings the benchmarks tune sit in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import qdrant_edge as qe

from stores.vectorstore.base import SPACE_FIELD, check_space
from stores.vectorstore.filters import SearchFilter

__all__ = ["INDEXED_FIELDS", "edge_config", "edge_filter", "edge_search_params", "index_fields"]

INDEXED_FIELDS = (SPACE_FIELD, "media_id", "label")  # keyword-indexed payload fields
# media_id and label without HNSW links per value: with them, every flush of an optimised shard
# took 80-110 ms instead of 5-9 ms (100k points, qdrant-edge-py 0.9.0), and a flush holds the
# GIL; their filters are served by the payload index and ACORN (see edge_search_params).
_FIELD_INDEX: dict[str, Any] = {f: qe.KeywordIndexParams(enable_hnsw=False) for f in INDEXED_FIELDS[1:]}
# HNSW: 16 links a node and 100 candidates while building (Qdrant's defaults; with a search ef
# of 128, recall@10 of 0.95 or more for every query type at 1M 256-d points, BENCHMARKS.md); a
# segment is indexed once its vectors pass 10 MB (20k 256-d fp16 vectors), and a filter matching
# under 10 MB of vectors is answered by scoring those points exactly through the payload index.
_HNSW_M, _HNSW_EF_CONSTRUCT, _FULL_SCAN_THRESHOLD_KB = 16, 100, 10_000
_INDEXING_THRESHOLD_KB = 10_000


def edge_config(dim: int) -> qe.EdgeConfig:
    params = qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine, datatype=qe.VectorStorageDatatype.Float16)
    return qe.EdgeConfig(
        vectors=params,
        hnsw_config=qe.HnswIndexConfig(_HNSW_M, _HNSW_EF_CONSTRUCT, _FULL_SCAN_THRESHOLD_KB),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=_INDEXING_THRESHOLD_KB),
    )


def index_fields(shard: qe.EdgeShard, fields: Iterable[str]) -> None:
    for field in fields:
        schema = _FIELD_INDEX.get(field, qe.PayloadSchemaType.Keyword)
        shard.update(qe.UpdateOperation.create_field_index(field, schema))


def edge_search_params(hnsw_ef: int | None) -> qe.SearchParams:
    """How an HNSW search runs: ``hnsw_ef`` candidates, and ACORN when a filter is selective.

    ACORN looks at neighbours' neighbours where a filter (every search names a space) cuts the
    graph apart: at 100k points it took a space-filtered search's recall@10 from 0.80 to 1.0
    at ef 64 (``loadtest/bench_search.py``).
    """
    return qe.SearchParams(hnsw_ef=hnsw_ef, acorn=qe.AcornSearchParams(enable=True))


def edge_filter(space: str | None, where: SearchFilter | None) -> qe.Filter | None:
    """The space and the filter's conditions as a qdrant-edge filter (None: no condition)."""
    space = check_space(space)
    must: list[Any] = [] if space is None else [qe.FieldCondition(key=SPACE_FIELD, match=qe.MatchValue(space))]
    must_not: list[Any] = []
    if where:
        if where.media_ids:
            must.append(qe.FieldCondition(key="media_id", match=qe.MatchAny(list(where.media_ids))))
        if where.labels:
            must.append(qe.FieldCondition(key="label", match=qe.MatchAny(list(where.labels))))
        if where.timed:
            span = qe.RangeFloat(gte=where.time_from_s, lte=where.time_to_s)
            must.append(qe.FieldCondition(key="timestamp_s", range=span))
        must += [qe.FieldCondition(key=f"meta.{k}", match=qe.MatchValue(v)) for k, v in where.meta]
        if where.exclude_ids:
            must_not.append(qe.HasIdCondition(set(where.exclude_ids)))
    if not must and not must_not:
        return None
    return qe.Filter(must=must or None, must_not=must_not or None)

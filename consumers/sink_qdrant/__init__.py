"""The Qdrant sink: vector batches -> Qdrant collections, offsets stored beside the vectors.

:mod:`consumers.sink_qdrant.transform` is the pure part (grouping, ids, payloads); the store
behind it is :mod:`stores.vectorstore`.
"""

"""The encrypted index sink: vector batches -> cyborgdb-core encrypted indexes, one per vector space.

The store behind it is :mod:`mediavec.encindex`; key handling and rotation are described in
docs/encrypted-index.md.
"""

from consumers.sink_encrypted.sink import EncryptedSink, collection_name, space_upserts

__all__ = ["EncryptedSink", "collection_name", "space_upserts"]

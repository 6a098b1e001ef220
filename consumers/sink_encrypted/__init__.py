"""The encrypted index sink: vector batches -> cyborgdb-core encrypted indexes, one per vector space.

The store behind it is :mod:`stores.encindex`; key handling and rotation are described in
docs/encrypted-index.md.
"""

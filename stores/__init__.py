"""The stores the sinks write and search reads: Qdrant, the encrypted index, PostgreSQL metadata."""

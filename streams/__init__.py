"""Kafka plumbing: topics, settings, serde glue, the transactional runner, the DLQ."""

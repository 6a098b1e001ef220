"""mediavec tests: unit, integration (real Kafka and PostgreSQL), end to end."""

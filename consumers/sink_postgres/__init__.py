"""sink-postgres: frame and object metadata from the vectors topic into PostgreSQL, exactly once."""

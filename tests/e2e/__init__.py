"""End-to-end tests: real media through every stage."""

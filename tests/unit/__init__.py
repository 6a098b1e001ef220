"""Unit tests: pure transforms, no network."""

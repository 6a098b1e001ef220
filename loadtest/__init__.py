"""Benchmarks and load tests; figures go to BENCHMARKS.md."""

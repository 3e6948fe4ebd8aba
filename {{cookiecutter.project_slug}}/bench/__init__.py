"""Benchmarks: runnable scripts that print figures (`make bench-train`, `make bench-serve`)."""

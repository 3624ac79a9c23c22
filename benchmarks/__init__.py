"""Benchmarks: scripts that print figures (``python -m benchmarks``; docs/performance.md). Not tests."""

"""Benchmarks of turnwise; each module runs with ``python -m benchmarks.<name>``."""

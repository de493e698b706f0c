"""Benchmarks of the package: timings, memory and method checks, each run as ``python -m benchmarks.NAME``."""

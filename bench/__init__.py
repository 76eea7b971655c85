"""Benchmark harness for mirror: `python -m bench --help`."""

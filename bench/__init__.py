"""Latency and resource benchmarks: direct vs nginx vs Fortress on loopback (see bench/README.md)."""

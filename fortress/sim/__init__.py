"""A fast, protocol-faithful Ollama simulator: the upstream for tests and benchmarks (see README.md)."""

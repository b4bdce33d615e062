"""HTTP pieces shared by the proxy and the pipeline, depending on neither (see docs/architecture.md)."""

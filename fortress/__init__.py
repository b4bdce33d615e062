"""Fortress: a security and management gateway for Ollama."""

__version__ = "0.1.0"

"""Fortress: a security and management gateway for Ollama."""

from fortress.native import choose

__version__ = "0.1.0"
MODE = choose()  # compiled or pure Python, and why (fortress.native)

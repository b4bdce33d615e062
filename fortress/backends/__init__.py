"""Backend kinds (how each type of backend is reached, spoken to and read) and the one control client.

`kind.py` defines the BackendKind protocol and the registry; each kind module registers itself here on
import. See docs/architecture.md for how the proxy uses them.
"""

from fortress.backends import ollama, openai  # noqa: F401  (registers the kinds)

"""Backend kinds (how each type of backend is reached, spoken to and read) and the one control client.

`kind.py` defines the BackendKind protocol and the registry; each kind module registers itself here on
import. Importing the kinds needs only the standard library (config validation runs where h11 may be
missing, e.g. reset.sh); the control client (client.py, h11) is imported by whoever probes. See
docs/architecture.md for how the proxy uses them.
"""

from fortress.backends import ollama, openai  # noqa: F401  (registers the kinds)

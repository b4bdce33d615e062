"""Provider models through the Ollama API, and `/v1` answers relayed with exact usage: pure, sans-IO code.

An `openai`-kind backend P with model M is exposed as `P/M` (DESIGN §6.3). `requests.translate()`
turns an Ollama request for it into the provider's OpenAI request; the codecs (the Codec protocol of
`fortress/backends/codec.py`, see docs/architecture.md) turn the provider's answer back:
`GenerationCodec` for /api/chat and /api/generate, `EmbedCodec` for /api/embed and /api/embeddings,
`OpenAIRelay` for `/v1` answers. `models` gives P/M's /api/tags, /api/show and /api/ps entries.
No sockets, no event loop, no clock but the one a codec is given.
"""

from fortress.translate.embeddings import EmbedCodec
from fortress.translate.generation import GenerationCodec
from fortress.translate.relay import OpenAIRelay, ask_for_usage, rename_model
from fortress.translate.requests import Translation, TranslationError, translate

__all__ = [
    "EmbedCodec",
    "GenerationCodec",
    "OpenAIRelay",
    "Translation",
    "TranslationError",
    "ask_for_usage",
    "rename_model",
    "translate",
]

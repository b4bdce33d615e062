"""Deterministic model output: token pieces, token counts, and embedding vectors derived from text."""

from __future__ import annotations

import hashlib
import json
import math
from array import array
from functools import lru_cache

# One token per entry; includes a quote, non-ASCII and a newline so relays must not re-encode.
VOCABULARY = (
    "The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".",
    " Café", " au", " lait", ",", ' "naïve"', " ideas", ".\n",
)  # fmt: skip
_ESCAPED = tuple(json.dumps(piece, ensure_ascii=False)[1:-1] for piece in VOCABULARY)
TEMPLATE_OVERHEAD = 10


@lru_cache(maxsize=256)
def pieces(count: int, chunk_size: int) -> tuple[bytes, ...]:
    """`count` tokens grouped `chunk_size` per chunk, each JSON-string-escaped UTF-8 (cached)."""
    size = max(1, chunk_size)
    n = len(_ESCAPED)
    return tuple(
        "".join(_ESCAPED[j % n] for j in range(i, min(i + size, count))).encode()
        for i in range(0, count, size)
    )


def plain_text(count: int) -> str:
    """The whole completion of `count` tokens, unescaped (for non-stream replies)."""
    n = len(VOCABULARY)
    return "".join(VOCABULARY[i % n] for i in range(count))


def count_tokens(text: str) -> int:
    """A stable stand-in for a tokenizer: about four characters per token."""
    return (len(text) + 3) // 4


@lru_cache(maxsize=4096)
def embedding(text: str, dimensions: int) -> tuple[float, ...]:
    """An L2-normalised vector that depends only on (text, dimensions), rounded like float32 output."""
    raw = array("h", hashlib.shake_256(text.encode()).digest(2 * dimensions))
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return tuple(round(v / norm, 8) for v in raw)


@lru_cache(maxsize=4096)
def embedding_json(text: str, dimensions: int) -> bytes:
    """The vector of `embedding` as a JSON array, cached because benchmarks repeat inputs."""
    return json.dumps(embedding(text, dimensions), separators=(",", ":")).encode()

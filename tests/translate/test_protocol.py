"""The codecs keep the contract of CODEC.md (`fortress/backends/codec.py`, built by the core side)."""

from __future__ import annotations

import inspect
from typing import Protocol, runtime_checkable

import pytest

from fortress.translate import EmbedCodec, GenerationCodec, OpenAIRelay
from tests.translate.conftest import ticking

Headers = list[tuple[bytes, bytes]]


@runtime_checkable
class Codec(Protocol):
    """CODEC.md's protocol, word for word in its API (a copy until core's module is merged)."""

    prompt_tokens: int | None
    completion_tokens: int | None

    def head(self, status: int, headers: Headers) -> tuple[int, bytes]: ...
    def feed(self, data: bytes) -> bytes: ...
    def end(self) -> bytes: ...
    def cut(self, message: str) -> bytes: ...


CODECS = [
    GenerationCodec("p/m", chat=True, stream=True, clock=ticking()),
    EmbedCodec("p/m", legacy=False, clock=ticking()),
    OpenAIRelay(client_wants_usage=False, model="p/m"),
]


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: type(c).__name__)
def test_codec_protocol(codec: object) -> None:
    assert isinstance(codec, Codec)
    assert codec.prompt_tokens is None and codec.completion_tokens is None  # type: ignore[attr-defined]
    for name in ("head", "feed", "end", "cut"):
        assert (
            list(inspect.signature(getattr(codec, name)).parameters)
            == list(inspect.signature(getattr(Codec, name)).parameters)[1:]
        )

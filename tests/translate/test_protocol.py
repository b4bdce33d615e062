"""The codecs keep the contract of the codec hook (`fortress/backends/codec.py`, docs/architecture.md)."""

from __future__ import annotations

import inspect

import pytest

from fortress.backends.codec import Codec
from fortress.translate import EmbedCodec, GenerationCodec, OpenAIRelay
from tests.translate.conftest import ticking

CODECS = [
    GenerationCodec("p/m", chat=True, stream=True, clock=ticking()),
    EmbedCodec("p/m", legacy=False, clock=ticking()),
    OpenAIRelay(client_wants_usage=False, model="p/m"),
]


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: type(c).__name__)
def test_codec_protocol(codec: object) -> None:
    for attribute in Codec.__annotations__:
        assert hasattr(codec, attribute), attribute
    assert codec.prompt_tokens is None and codec.completion_tokens is None  # type: ignore[attr-defined]
    for name in ("head", "feed", "end", "cut"):
        assert (
            list(inspect.signature(getattr(codec, name)).parameters)
            == list(inspect.signature(getattr(Codec, name)).parameters)[1:]
        )

"""Ollama's base64 images as OpenAI data-URL content parts, the MIME type read from the image bytes.

Ollama takes bare base64 and sniffs the format itself; OpenAI wants `data:<mime>;base64,...`, so
the type is read from the first bytes (magic numbers), never from what a client claims.
"""

from __future__ import annotations

import base64
import binascii

# (offset, magic bytes, MIME type); WebP is RIFF....WEBP, checked separately.
_MAGIC = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"BM", "image/bmp"),
    (4, b"ftypavif", "image/avif"),
    (4, b"ftypheic", "image/heic"),
)
UNKNOWN = "image/png"  # what an unrecognised image is called: providers refuse octet-stream


class ImageError(ValueError):
    """An image that is not base64; the message says which one."""


def sniff(head: bytes) -> str:
    """The MIME type of an image from its first bytes (16 are enough)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    for offset, magic, mime in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return mime
    return UNKNOWN


def data_url(image: object, position: int) -> str:
    """`data:<mime>;base64,<data>` for one Ollama image (bare base64); ImageError when it is not base64."""
    if not isinstance(image, str) or not image:
        raise ImageError(f"image {position} is not a base64 string")
    if image.startswith("data:"):  # Ollama refuses these; a client sending one meant a data URL
        return image
    if "\n" in image:  # wrapped base64 (Go's decoder skips line breaks; data URLs must not have them)
        image = image.replace("\r", "").replace("\n", "")
    try:
        head = base64.b64decode(image[:24], validate=True)  # 24 characters = 18 bytes, padding-free
        if len(image) % 4:
            raise binascii.Error("incorrect padding")
    except (binascii.Error, ValueError):
        raise ImageError(f"image {position} is not valid base64") from None
    return f"data:{sniff(head)};base64,{image}"


def image_part(image: object, position: int) -> dict:
    """One OpenAI `image_url` content part."""
    return {"type": "image_url", "image_url": {"url": data_url(image, position)}}

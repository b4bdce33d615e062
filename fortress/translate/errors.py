"""A provider's error answer, as the client should see it: a fitting status and a readable message.

A provider's 401/403/402 concern the gateway's own credential or account, not the client's request,
so the client gets 502 and a message that never echoes what the provider said about the credential
(some providers quote part of the key). Everything else keeps the provider's words.
"""

from __future__ import annotations

from fortress.translate.base import loads

# Provider status -> the client's status; other 4xx -> 400, other 5xx -> 502.
_STATUS = {
    400: 400,
    401: 502,
    402: 502,
    403: 502,
    404: 404,
    408: 504,
    413: 413,
    422: 400,
    429: 429,
    500: 500,
    502: 502,
    503: 503,
    504: 504,
}
_LONGEST = 1000  # characters of a provider's message kept


def client_status(status: int) -> int:
    """The status a client gets for a provider's error status."""
    mapped = _STATUS.get(status)
    if mapped is not None:
        return mapped
    return 400 if 400 <= status < 500 else 502


def message_of(value: object) -> str:
    """The text in the error shapes providers use: OpenAI's, Ollama's, FastAPI's, Anthropic's."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "; ".join(filter(None, (message_of(item) for item in value)))
    if isinstance(value, dict):
        for key in ("error", "message", "detail", "msg"):
            if key in value:
                text = message_of(value[key])
                if text:
                    return text
    return ""


def provider_message(status: int, body: bytes) -> str:
    """What the provider's error body says, or a plain statement of the status when it says nothing usable."""
    if status in (401, 403):
        return f"the provider refused the gateway's credential (HTTP {status})"
    text = ""
    try:
        text = message_of(loads(body))
    except ValueError:
        raw = body.decode("utf-8", "replace").strip()
        if raw and not raw.startswith("<"):  # an HTML error page says nothing a client can use
            text = raw
    text = " ".join(text.split())
    if not text:
        return f"the provider answered HTTP {status}"
    return text if len(text) <= _LONGEST else text[: _LONGEST - 3] + "..."

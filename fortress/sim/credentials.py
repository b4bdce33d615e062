"""The provider mode's credential check (`--api-key`), answered as OpenAI and Anthropic answer it.

OpenAI takes `Authorization: Bearer <key>`; Anthropic clients send `x-api-key`. A wrong key is
quoted back masked, as OpenAI does, so a gateway that relays the message must not leak it further.
"""

from __future__ import annotations

import hmac

from fortress.sim.request import Request
from fortress.sim.wire import Full, anthropic_error, openai_error

MISSING = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


def masked(key: str) -> str:
    """OpenAI's way to name a wrong key: its first and last characters only."""
    return key[:3] + "*" * (len(key) - 7) + key[-4:] if len(key) > 8 else "*" * len(key)


def refusal(expected: str, req: Request, family: str) -> Full | None:
    """None when the request carries `expected` (or no key is configured), else the 401 to answer."""
    if not expected:
        return None
    scheme, _, token = req.lower.get("authorization", "").partition(" ")
    given = token.strip() if scheme.lower() == "bearer" else ""
    if family == "anthropic":
        given = req.lower.get("x-api-key", "") or given
    if given and hmac.compare_digest(given.encode(), expected.encode()):
        return None
    if family == "anthropic":
        return anthropic_error(401, "invalid x-api-key")
    if not given:
        return openai_error(401, MISSING)
    message = f"Incorrect API key provided: {masked(given)}. You can find your API key at https://platform.openai.com/account/api-keys."
    return openai_error(401, message, "invalid_api_key")

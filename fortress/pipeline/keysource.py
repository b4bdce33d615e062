"""Where a client put its API key (DESIGN §6.1): every form popular clients use, in one order.

1. `Authorization: Bearer <key>` (OpenAI and Ollama libraries, curl -H);
2. `Authorization: <key>`, bare (clients that take "a header value");
3. `Authorization: Basic base64(user:pass)` with the key as password or user, so a URL such as
   `http://x:<key>@host:8080` works in every client that takes only a URL (curl, httpx, requests);
4. `X-API-Key: <key>`, also as Anthropic clients send it (`x-api-key`; header names are matched
   case-insensitively by the parser);
5. `?api_key=<key>`, when `[security] key_in_query` allows it.
(The JSON body's `api_key`, with `key_in_body`, needs the body: the chain reads it in its body stage.)

A value shaped like a Fortress key (`fk_...`) wins over one that is not, in the order above, so a
client that sends a placeholder in one header and the key in another still gets in; when no value is
shaped like a key, the first one present is the one refused; an empty value counts as none (a client
with no key configured may send `Bearer ` alone). Pure functions, no state.
"""

from __future__ import annotations

import binascii
from base64 import b64decode

from fortress.keys import PREFIX

_PREFIX = PREFIX.encode()


def _from_authorization(value: bytes) -> bytes:
    """The key an Authorization value carries (Bearer, Basic or bare), or the value as it is."""
    value = value.strip()
    scheme, _, rest = value.partition(b" ")
    lowered = scheme.lower()
    if lowered == b"bearer":
        return rest.strip()
    if lowered == b"basic":
        try:
            user, _, password = b64decode(rest.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return value  # not base64: refused as it is (a raw key after "Basic" is not a form we take)
        return password if password.startswith(_PREFIX) or not user.startswith(_PREFIX) else user
    return value  # bare: the whole value is the key


def bearer_key(authorization: bytes) -> str | None:
    """The key an Authorization value carries when it is shaped like ours (it then wins over every other
    source), else None."""
    token = _from_authorization(authorization)
    return token.decode("latin-1") if token.startswith(_PREFIX) else None


def _from_query(query: str) -> str | None:
    if "api_key=" not in query:
        return None
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "api_key":
            return value
    return None


def presented_key(
    authorization: bytes | None, x_api_key: bytes | None, query: str, in_query: bool
) -> str | None:
    """The key the client presented, or None when it sent none at all."""
    fallback: str | None = None
    if authorization is not None:
        token = _from_authorization(authorization)
        if token.startswith(_PREFIX):
            return token.decode("latin-1")
        if token:
            fallback = token.decode("latin-1")
    if x_api_key is not None:
        token = x_api_key.strip()
        if token.startswith(_PREFIX):
            return token.decode("latin-1")
        if token and fallback is None:
            fallback = token.decode("latin-1")
    if in_query:
        value = _from_query(query)
        if value and (value.startswith(PREFIX) or fallback is None):
            return value
    return fallback

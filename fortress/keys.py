"""API key format, generation and constant-time verification (pure; no I/O).

A key is ``fk_<id>_<secret>``: an 8-character public id that finds the record in O(1), and a
43-character base62 secret of which only a SHA-256 hash is stored. The secret carries ~256 bits of
entropy, so a fast hash is the right tool (a slow KDF protects low-entropy passwords, not random keys).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

PREFIX = "fk_"
ID_LEN = 8
SECRET_LEN = 43
MIN_SECRET_LEN = 32
_ALPHABET = string.ascii_letters + string.digits
_ID_ALPHABET = string.ascii_lowercase + string.digits
_ALNUM = frozenset(_ALPHABET)

# Compared against when the id is unknown, so unknown-id and wrong-secret cost the same.
DUMMY_HASH = hashlib.sha256(b"fortress-no-such-key").hexdigest()


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def generate() -> tuple[str, str, str]:
    """A new key: (full key to show once, id, secret hash to store)."""
    key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LEN))
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LEN))
    return f"{PREFIX}{key_id}_{secret}", key_id, hash_secret(secret)


def split(token: str) -> tuple[str, str] | None:
    """Split a presented key into (id, secret), or None when it is not shaped like a key."""
    if len(token) < len(PREFIX) + ID_LEN + 1 + MIN_SECRET_LEN or not token.startswith(PREFIX):
        return None
    key_id = token[3 : 3 + ID_LEN]
    if token[3 + ID_LEN] != "_":
        return None
    secret = token[4 + ID_LEN :]
    if len(secret) > 128 or not _ALNUM.issuperset(secret) or not key_id.isalnum():
        return None
    return key_id, secret


def matches(secret: str, stored_hash: str | None) -> bool:
    """Constant-time check; with stored_hash None it still hashes and compares (timing parity)."""
    expected = DUMMY_HASH if stored_hash is None else stored_hash
    ok = hmac.compare_digest(hash_secret(secret), expected)
    return ok and stored_hash is not None

"""API keys: made once, shown once, stored only as a salted hash, compared in constant time.

A key reads ``sk_<id>_<secret>``: ``id`` (8 hex digits) is public and finds the key's row,
``secret`` (32 random bytes, URL-safe base64) is what proves it. The server stores
``sha256(salt || secret)`` with a random 16-byte salt per key; a secret of 256 random bits needs no
slow hash (there is nothing to guess), and ``hmac.compare_digest`` keeps the comparison's time
independent of where a wrong secret differs.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

_FORMAT = re.compile(r"^sk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewKey:
    """A freshly made key: ``token`` is given to the user once; only the rest is stored."""

    id: str
    token: str
    salt: bytes
    digest: bytes


def digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


def make_key() -> NewKey:
    key_id = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    return NewKey(key_id, f"sk_{key_id}_{secret}", salt, digest(salt, secret))


def split_token(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed token, else None."""
    m = _FORMAT.match(token.strip())
    return (m.group(1), m.group(2)) if m else None


def verify(secret: str, salt: bytes, stored: bytes) -> bool:
    return hmac.compare_digest(digest(salt, secret), stored)

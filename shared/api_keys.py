"""Making and hashing API keys (no service imports: the CLI's offline `keygen` uses it too)."""

from __future__ import annotations

import hashlib
import secrets


def new_key() -> str:
    return "atl_" + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """A key is a random token, so one unsalted SHA-256 makes the stored list useless to a reader."""
    return hashlib.sha256(key.encode()).hexdigest()

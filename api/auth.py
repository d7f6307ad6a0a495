"""API keys: who is calling, what they may see, and how many jobs they may queue.

Keys are configured as SHA-256 hashes (`ATELIER_API_KEYS` or a mounted file), never in clear. A key
is a random token, so one unsalted hash is enough (shared/api_keys.py). With
no keys configured every caller is the public owner (development); with keys, every /v1 request
needs one (`Authorization: Bearer`, `X-API-Key`, or the console's cookie).
"""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import current_app, g, request
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from shared.api_keys import hash_key
from shared.errors import Forbidden, Unauthorized
from shared.jobs import DEFAULT_OWNER
from shared.settings import Settings

COOKIE = "atelier_key"
BEARER = [{"bearer": []}]  # the OpenAPI security requirement of every /v1 operation


class KeyEntry(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    admin: bool = False
    max_queued: int | None = Field(None, ge=0, description="overrides ATELIER_MAX_QUEUED_JOBS for this key")


@dataclass(frozen=True)
class Caller:
    owner: str
    admin: bool
    max_queued: int


class KeyRing:
    """The configured keys, read once when the app is built (a bad list stops the process)."""

    def __init__(self, entries: list[KeyEntry], default_max_queued: int) -> None:
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise ValueError("ATELIER_API_KEYS: key names must be unique (a name owns its jobs)")
        self.entries = entries
        self.default_max_queued = default_max_queued

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        raw = settings.api_keys_file.read_text() if settings.api_keys_file else settings.api_keys
        if not raw.strip():
            return cls([], settings.max_queued_jobs)
        try:
            entries = TypeAdapter(list[KeyEntry]).validate_python(json.loads(raw))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ValueError(f"ATELIER_API_KEYS is not a valid key list: {exc}") from exc
        return cls(entries, settings.max_queued_jobs)

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    def lookup(self, key: str) -> Caller | None:
        digest = hash_key(key)
        found = None
        for entry in self.entries:  # compare against every entry: the time taken says nothing
            if hmac.compare_digest(entry.sha256, digest):
                found = entry
        return self._caller(found)

    def by_name(self, name: str) -> Caller | None:
        """The caller a console session signed in as, while its key is still configured."""
        return self._caller(next((e for e in self.entries if e.name == name), None))

    def _caller(self, entry: KeyEntry | None) -> Caller | None:
        if entry is None:
            return None
        limit = self.default_max_queued if entry.max_queued is None else entry.max_queued
        return Caller(owner=entry.name, admin=entry.admin, max_queued=limit)

    def anonymous(self) -> Caller:
        return Caller(owner=DEFAULT_OWNER, admin=False, max_queued=self.default_max_queued)


def presented_key() -> str | None:
    """The key sent in a header by an API client (the console's cookie holds a session, not a key)."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.headers.get("X-API-Key") or None


SESSION_KEY = "atelier:console-session:{digest}"


class Sessions:
    """Console sign-ins kept server-side: the cookie holds a random id; Redis maps its hash to the
    key's name until it expires or the user signs out. A key removed from the configuration ends
    its sessions at the next request, and the cookie never carries the key itself."""

    def __init__(self, client: Any, ttl_s: int) -> None:
        self.redis, self.ttl_s = client, ttl_s

    @staticmethod
    def _key(session_id: str) -> str:
        return SESSION_KEY.format(digest=hash_key(session_id))

    def open(self, key_name: str) -> str:
        session_id = secrets.token_urlsafe(32)
        self.redis.set(self._key(session_id), key_name, ex=self.ttl_s)
        return session_id

    def name_of(self, session_id: str) -> str | None:
        name = self.redis.get(self._key(session_id))
        return name.decode() if isinstance(name, bytes) else name

    def close(self, session_id: str) -> None:
        self.redis.delete(self._key(session_id))


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def check_same_origin() -> None:
    """A write carried by the console cookie must come from the console's own pages: its Origin (or,
    without one, its Referer) names this host. API clients send the key in a header and are not
    affected. The cookie is also SameSite=Strict; this is the check that does not rely on the browser."""
    source = request.headers.get("Origin") or request.headers.get("Referer") or ""
    if urlsplit(source).netloc.lower() != request.host.lower():
        raise Forbidden("a cookie-signed write must come from the console's own pages (Origin "
                        f"{source or 'missing'} is not {request.host})", code="cross_site_request", field="Origin")


def authenticate() -> None:
    """before_request: puts the Caller on `g`, or answers 401 for a missing or unknown key."""
    ring: KeyRing = current_app.extensions["atelier_keys"]
    if not ring.enabled:
        g.caller = ring.anonymous()
        return
    key = presented_key()
    caller = ring.lookup(key) if key else None
    if caller is None and key is None and request.cookies.get(COOKIE):
        sessions: Sessions = current_app.extensions["atelier_sessions"]
        name = sessions.name_of(request.cookies[COOKIE])
        caller = ring.by_name(name) if name else None
        if caller is not None and request.method not in SAFE_METHODS:
            check_same_origin()
    if caller is not None:
        g.caller = caller
        return
    if not request.path.startswith("/v1/"):
        g.caller = None  # probes, metrics, docs; console pages send the caller to sign in
        return
    if key is None:
        raise Unauthorized("this service needs an API key: send `Authorization: Bearer <key>`",
                           code="missing_api_key", field="Authorization")
    raise Unauthorized("the API key is not known (revoked or mistyped)", code="invalid_api_key",
                       field="Authorization")


def current_caller() -> Caller:
    caller = g.get("caller")
    if caller is None:
        raise Unauthorized("sign in with an API key first", code="missing_api_key", field="Authorization")
    return caller


def caller_is_admin() -> bool:
    """Whether the caller may do what only admins may (everyone, with keys off)."""
    ring: KeyRing = current_app.extensions["atelier_keys"]
    return not ring.enabled or current_caller().admin


def require_admin(field: str = "Authorization") -> Caller:
    caller = current_caller()
    if not caller_is_admin():
        raise Forbidden("only an admin key may do this", code="admin_only", field=field)
    return caller

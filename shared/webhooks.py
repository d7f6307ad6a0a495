"""Webhook rules both sides apply: which targets may be called, and how a delivery is signed.

A target on loopback, a private or link-local range (cloud metadata included) or any other
non-global address is refused unless `ATELIER_WEBHOOK_ALLOW_PRIVATE` is set: otherwise a job's
webhook would let any caller make the service probe its own network. The API checks at submit
(a 422 naming `webhook`); the worker checks again right before each delivery, because DNS may
have changed in between.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import redis

from shared.errors import ValidationFailed
from shared.queue import DELIVER_WEBHOOK_TASK, WEBHOOKS

log = logging.getLogger(__name__)

# "<job id>|<event>" members scored by when the event happened; written by the job store's Lua
# scripts in the same step as the status change, so no event is lost between the two.
OUTBOX = "atelier:webhooks:outbox"
SIGNATURE_HEADER = "X-Atelier-Signature"
EVENT_HEADER = "X-Atelier-Event"
DELIVERY_HEADER = "X-Atelier-Delivery"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: the timestamp is signed too, so a
    receiver can refuse an old delivery replayed at it."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, *, now: int, tolerance_s: int = 300) -> bool:
    """What a receiver does (and what the tests do): recompute and compare in constant time."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), f"t={timestamp},v1={parts.get('v1', '')}")


# Ranges `is_global` lets through on some Python versions although they carry or reach another
# address (IPv4-compatible, NAT64, 6to4 and its relay, segment routing) or are not on the public
# internet (site-local, the IPv6 documentation range): through them, 127.0.0.1 or 169.254.169.254.
REFUSED = tuple(ipaddress.ip_network(n) for n in ("::/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16",
                                                   "fec0::/10", "5f00::/16", "3fff::/20", "192.88.99.0/24"))


def _non_global(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast or any(ip in network for network in REFUSED
                                                      if network.version == ip.version)


def resolve_target(url: str, *, allow_private: bool, field: str = "webhook") -> list[str]:
    """The target's addresses; ValidationFailed when it cannot be called. The worker connects to
    these very addresses (`pinned_url`), so a name that re-resolves elsewhere later gains nothing."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:  # "http://[::1/": an unclosed IPv6 literal, a bad port
        raise ValidationFailed(f"the webhook URL is malformed ({exc})", code="invalid_webhook", field=field) from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed("a webhook is an http(s) URL with a host", code="invalid_webhook", field=field)
    if parts.username or parts.password:
        raise ValidationFailed("put no credentials in the webhook URL; deliveries are signed instead",
                               code="invalid_webhook", field=field)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise ValidationFailed(f"the webhook host {parts.hostname!r} does not resolve", code="webhook_unresolvable",
                               field=field) from exc
    addresses = sorted({info[4][0] for info in infos})
    if not allow_private:
        blocked = [a for a in addresses if _non_global(a)]
        if blocked:
            raise ValidationFailed(f"webhook targets on loopback or private networks are refused ({parts.hostname} is "
                                   f"{blocked[0]})", code="webhook_target_not_allowed", field=field,
                                   details={"addresses": blocked})
    return addresses


def pinned_url(url: str, address: str) -> tuple[str, str, str]:
    """The URL with its host replaced by one checked address, the Host header it needs, and the
    hostname TLS must verify: the delivery connects where the check looked, not where DNS says now."""
    parts = urlsplit(url)
    literal = f"[{address}]" if ":" in address else address
    netloc = literal + (f":{parts.port}" if parts.port else "")
    host_header = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=netloc).geturl(), host_header, parts.hostname or ""


def dispatch_outbox(client: redis.Redis, celery: Any, limit: int = 200) -> int:
    """Turn outbox entries into delivery tasks. Called right after a status change (worker, API
    cancel) and by the reaper, which catches whatever a crash left behind. Each entry is taken by
    exactly one caller (ZREM), and put back when the task cannot be sent."""
    sent = 0
    for entry in client.zrange(OUTBOX, 0, limit - 1):
        if not client.zrem(OUTBOX, entry):
            continue  # another dispatcher took it
        job_id, _, event = entry.partition("|")
        try:
            celery.send_task(DELIVER_WEBHOOK_TASK, args=[job_id, event, 1], queue=WEBHOOKS)
        except Exception:
            client.zadd(OUTBOX, {entry: time.time()})
            log.exception("could not enqueue the %s webhook of job %s; the reaper will retry", event, job_id)
            break
        sent += 1
    return sent

"""Delivering one webhook event: sign, POST, record the attempt on the job, and schedule the next
attempt with exponential backoff until `ATELIER_WEBHOOK_MAX_ATTEMPTS`.

Delivery is at least once: a receiver deduplicates on `X-Atelier-Delivery` (job id and event).
Redirects are not followed (a redirect could point inside the network the target check guards).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import threading
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from shared.errors import ValidationFailed
from shared.image_urls import ImageUrlSigner, api_address
from shared.jobs import JobStore, public_view
from shared.queue import DELIVER_WEBHOOK_TASK, WEBHOOKS
from shared.settings import Settings
from shared.storage import Storage
from shared.webhooks import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, pinned_url, resolve_target, sign

log = logging.getLogger(__name__)
USER_AGENT = "Atelier-Webhooks/1"


def backoff_s(settings: Settings, attempt: int, rng: random.Random | None = None) -> float:
    """Delay before attempt `attempt + 1`: base × 2^(attempt−1), ±20 % jitter so a receiver that comes
    back is not hit by every pending delivery at once."""
    jitter = (rng or random).uniform(0.8, 1.2)
    return round(settings.webhook_backoff_s * 2 ** (attempt - 1) * jitter, 3)


def payload(job_data: dict, event: str) -> bytes:
    return json.dumps({"event": event, "job": job_data}, separators=(",", ":")).encode()


class _DeliveryAdapter(HTTPAdapter):
    """Remembers the connections it opens, so a watchdog can cut them at the delivery's deadline;
    for TLS to an address literal it still sends SNI for, and verifies the certificate of, the name."""

    def __init__(self, tls_hostname: str | None = None) -> None:
        self.tls_hostname = tls_hostname
        self.connections: list[Any] = []
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        if self.tls_hostname:
            kwargs.update(server_hostname=self.tls_hostname, assert_hostname=self.tls_hostname)
        super().init_poolmanager(*args, **kwargs)

    def get_connection_with_tls_context(self, *args: Any, **kwargs: Any) -> Any:
        pool = super().get_connection_with_tls_context(*args, **kwargs)
        if not getattr(pool, "_atelier_tracked", False):
            get_conn = pool._get_conn

            def tracked(*a: Any, **k: Any) -> Any:
                conn = get_conn(*a, **k)
                self.connections.append(conn)
                return conn

            pool._get_conn, pool._atelier_tracked = tracked, True
        return pool

    def cut(self) -> None:
        for conn in self.connections:
            sock = getattr(conn, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def post_pinned(url: str, address: str, body: bytes, headers: dict[str, str], timeout: float) -> requests.Response:
    """POST to the address `resolve_target` checked (no second DNS lookup: no rebinding), no redirects,
    within `timeout` in all: a receiver that trickles its answer a byte at a time is cut off at the
    deadline (per-read timeouts alone would let it hold a notifier thread for as long as it likes).
    Only the status line and headers are read; the body is never downloaded."""
    target, host, hostname = pinned_url(url, address)
    adapters = {"http://": _DeliveryAdapter(), "https://": _DeliveryAdapter(hostname)}
    watchdog = threading.Timer(timeout, lambda: [a.cut() for a in adapters.values()])
    watchdog.daemon = True
    with requests.Session() as session:
        session.trust_env = False  # no proxy from the environment between the check and the target
        for prefix, adapter in adapters.items():
            session.mount(prefix, adapter)
        watchdog.start()
        try:
            response = session.post(target, data=body, headers={**headers, "Host": host}, timeout=timeout,
                                    allow_redirects=False, stream=True)
            response.close()  # the status is the answer; the body stays unread
            return response
        except requests.RequestException as exc:
            if not watchdog.is_alive():
                raise requests.Timeout(f"no complete answer within {timeout:g} s") from exc
            raise
        finally:
            watchdog.cancel()


def deliver(settings: Settings, store: JobStore, storage: Storage, celery: Any, job_id: str, event: str,
            attempt: int) -> dict | None:
    """One attempt. Returns the recorded attempt (None when the job or its webhook is gone)."""
    job = store.get(job_id)
    if job is None or not job.webhook:
        return None
    image_url = partial(ImageUrlSigner.from_settings(settings).url, api_address(settings))
    body = payload(public_view(job, storage.presigned_url, exclude={"webhook_deliveries"}, image_url=image_url),
                   event)
    record: dict[str, Any] = {"event": event, "attempt": attempt, "at": datetime.now(UTC).isoformat(), "ok": False}
    retry = True
    started = time.monotonic()
    try:
        addresses = resolve_target(job.webhook, allow_private=settings.webhook_allow_private)
        if not settings.webhook_secret:
            raise ValidationFailed("ATELIER_WEBHOOK_SECRET is not set on the worker", code="webhooks_not_configured")
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, EVENT_HEADER: event,
                   DELIVERY_HEADER: f"{job_id}:{event}",
                   SIGNATURE_HEADER: sign(settings.webhook_secret, int(time.time()), body)}
        response = post_pinned(job.webhook, addresses[0], body, headers, settings.webhook_timeout_s)
        record["status_code"] = response.status_code
        record["ok"] = 200 <= response.status_code < 300
        if not record["ok"]:
            record["error"] = f"HTTP {response.status_code}"
    except ValidationFailed as exc:  # the target is refused now: trying again would not help
        record["error"] = exc.message
        retry = False
    except requests.RequestException as exc:
        record["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    record["duration_ms"] = int((time.monotonic() - started) * 1000)
    if not record["ok"] and retry and attempt < settings.webhook_max_attempts:
        delay = backoff_s(settings, attempt)
        record["next_attempt_in_s"] = delay
        celery.send_task(DELIVER_WEBHOOK_TASK, args=[job_id, event, attempt + 1], queue=WEBHOOKS, countdown=delay)
    store.record_webhook_delivery(job_id, record)
    level = logging.INFO if record["ok"] else logging.WARNING
    log.log(level, "webhook %s of job %s, attempt %d: %s", event, job_id, attempt,
            "delivered" if record["ok"] else record.get("error"))
    return record

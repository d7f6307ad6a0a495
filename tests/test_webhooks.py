"""Webhooks: signed deliveries from the Celery queue to a real receiver on loopback, retried with
backoff, every attempt recorded on the job; targets on private ranges refused at submit."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from deploy.local.servers import free_port
from shared.errors import ValidationFailed
from shared.settings import Settings
from shared.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    pinned_url,
    resolve_target,
    sign,
    verify,
)
from tests.support import WEBHOOK_SECRET, ApiServer, Client, WorkerProcess, on_redis_db, settings_from
from worker.webhook_delivery import backoff_s, post_pinned


class Receiver:
    """A webhook receiver: answers 503 to the first `fail_first` deliveries of each event."""

    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[dict] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                event = self.headers[EVENT_HEADER]
                seen = sum(1 for r in receiver.received if r["event"] == event)
                receiver.received.append({"event": event, "body": body, "headers": dict(self.headers),
                                          "at": time.monotonic()})
                self.send_response(503 if seen < receiver.fail_first else 204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/atelier"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.received


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=1)
    yield r
    r.server.shutdown()


def test_signature_covers_timestamp_and_body() -> None:
    body = b'{"event":"succeeded"}'
    header = sign(WEBHOOK_SECRET, 1_700_000_000, body)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify(WEBHOOK_SECRET, header, body, now=1_700_000_100)
    assert not verify(WEBHOOK_SECRET, header, body + b" ", now=1_700_000_100)  # body changed
    assert not verify("another-secret-0123456789", header, body, now=1_700_000_100)
    assert not verify(WEBHOOK_SECRET, header, body, now=1_700_000_000 + 3600)  # replayed an hour later
    assert not verify(WEBHOOK_SECRET, header.replace("t=1700000000", "t=1700000050"), body, now=1_700_000_100)


def test_backoff_doubles_with_bounded_jitter() -> None:
    settings = Settings(ATELIER_WEBHOOK_BACKOFF_SECONDS=2.0)
    rng = random.Random(0)
    delays = [backoff_s(settings, attempt, rng) for attempt in range(1, 6)]
    for attempt, delay in enumerate(delays, start=1):
        assert 0.8 * 2 * 2 ** (attempt - 1) <= delay <= 1.2 * 2 * 2 ** (attempt - 1)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/x", "http://localhost/x", "http://10.1.2.3/x",
                                 "http://192.168.0.10/x", "http://172.16.5.5/x", "http://169.254.169.254/latest",
                                 "http://[::1]/x", "http://[::ffff:127.0.0.1]/x", "http://100.64.0.1/x",
                                 "http://0.0.0.0/x", "http://[fd00::1]/x",
                                 # IPv6 forms that reach IPv4 loopback / metadata, and deprecated site-local
                                 "http://[::127.0.0.1]/x", "http://[64:ff9b::a9fe:a9fe]/x",
                                 "http://[2002:7f00:1::1]/x", "http://[fec0::1]/x"])
def test_private_and_loopback_targets_are_refused(url: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        resolve_target(url, allow_private=False)
    assert refused.value.code == "webhook_target_not_allowed"
    assert resolve_target(url, allow_private=True)  # the operator's switch


def test_credentials_and_unresolvable_hosts_are_refused() -> None:
    with pytest.raises(ValidationFailed, match="credentials"):
        resolve_target("https://user:pw@93.184.216.34/x", allow_private=False)
    with pytest.raises(ValidationFailed) as unresolvable:
        resolve_target("https://no-such-host.invalid/x", allow_private=False)
    assert unresolvable.value.code == "webhook_unresolvable"
    assert resolve_target("https://93.184.216.34/x", allow_private=False) == ["93.184.216.34"]


def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_deadline() -> None:
    """Finding 6: per-read timeouts let a receiver sending a byte every half second hold a notifier
    thread for as long as it likes; the delivery has one deadline for the whole answer."""
    import socket as socketlib

    server = socketlib.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 200:
            if stop.is_set():
                break
            try:
                conn.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.25)
        conn.close()

    threading.Thread(target=trickle, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        post_pinned(f"http://slow.invalid:{server.getsockname()[1]}/h", "127.0.0.1", b"{}", {}, 1.5)
    assert time.monotonic() - started < 4  # not the 50 s the trickle would take
    stop.set()
    server.close()


@pytest.mark.parametrize("url", ["http://[::1/", "http://example.com:99999/x", "http://example.com:port/x"])
def test_malformed_urls_are_refused_by_name(url: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        resolve_target(url, allow_private=True)
    assert refused.value.code == "invalid_webhook" and refused.value.field == "webhook"


def test_a_delivery_connects_to_the_checked_address_not_a_fresh_lookup(receiver: Receiver) -> None:
    """DNS rebinding: the name is resolved once, checked, and the request goes to that address with
    the name in the Host header. `.invalid` never resolves, so any second lookup would fail."""
    port = receiver.server.server_port
    assert pinned_url("https://shop.example:8443/h?x=1", "2001:db8::5") == (
        "https://[2001:db8::5]:8443/h?x=1", "shop.example:8443", "shop.example")
    response = post_pinned(f"http://rebound.invalid:{port}/hooks", "127.0.0.1", b"{}",
                           {EVENT_HEADER: "succeeded", "Content-Length": "2"}, 5)
    assert response.status_code == 503  # the receiver's first answer
    assert receiver.received[0]["headers"]["Host"] == f"rebound.invalid:{port}"


@pytest.mark.e2e
def test_submit_refuses_private_targets_and_missing_secret(env: dict[str, str]) -> None:
    strict = ApiServer(settings_from(on_redis_db(env, 6, ATELIER_WEBHOOK_ALLOW_PRIVATE="false"))).start()
    unsigned = ApiServer(settings_from(on_redis_db(env, 6, ATELIER_WEBHOOK_SECRET=""))).start()
    try:
        train = {"family": "cvae", "dataset": "fashion-mnist", "preset": "tiny"}
        client = Client(strict.url)
        for webhook, field in (("http://127.0.0.1:9/hook", "webhook"),
                               ({"url": "http://10.0.0.7/hook", "events": ["failed"]}, "webhook.url")):
            response = client.http.post(f"{strict.url}/v1/jobs", json={"type": "train", "input": train,
                                                                        "webhook": webhook}, timeout=10)
            assert response.status_code == 422, response.text
            assert response.json()["error"] == {**response.json()["error"], "code": "webhook_target_not_allowed",
                                                "field": field}
        malformed = client.http.post(f"{strict.url}/v1/jobs", json={"type": "train", "input": train,
                                                                     "webhook": "http://[::1/"}, timeout=10)
        assert malformed.status_code == 422, malformed.text
        assert (malformed.json()["error"]["code"], malformed.json()["error"]["field"]) == ("invalid_webhook", "webhook")
        bad_event = client.http.post(f"{strict.url}/v1/jobs", timeout=10, json={
            "type": "train", "input": train, "webhook": {"url": "https://93.184.216.34/h", "events": ["progress"]}})
        assert bad_event.status_code == 422 and bad_event.json()["error"]["field"].startswith("webhook")
        accepted = client.http.post(f"{strict.url}/v1/jobs", timeout=10, json={
            "type": "train", "input": train, "webhook": {"url": "https://93.184.216.34/h", "events": ["failed"]}})
        assert accepted.status_code == 202
        assert accepted.json()["webhook"] == "https://93.184.216.34/h"
        assert accepted.json()["webhook_events"] == ["failed"]
        off = Client(unsigned.url).http.post(f"{unsigned.url}/v1/jobs", timeout=10, json={
            "type": "train", "input": train, "webhook": "https://93.184.216.34/h"})
        assert off.status_code == 422 and off.json()["error"]["code"] == "webhooks_not_configured"
    finally:
        strict.stop()
        unsigned.stop()


@pytest.mark.e2e
def test_deliveries_are_signed_retried_and_recorded(client: Client, worker: WorkerProcess, trained_model: str,
                                                    receiver: Receiver) -> None:
    job = client.http.post(f"{client.base}/v1/jobs", timeout=10, json={
        "type": "generate_images", "input": {"conditions": {"class": "Dress"}, "n": 1, "model": trained_model},
        "webhook": {"url": receiver.url, "events": ["running", "succeeded"]}}).json()
    done = client.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded", worker.tail()
    received = receiver.wait_for(4)  # each event: a 503, then delivered on the retry
    assert sorted(r["event"] for r in received) == ["running", "running", "succeeded", "succeeded"], received
    for r in received:
        assert verify(WEBHOOK_SECRET, r["headers"][SIGNATURE_HEADER], r["body"], now=int(time.time()))
        assert r["headers"][DELIVERY_HEADER] == f"{job['id']}:{r['event']}"
    final = json.loads([r for r in received if r["event"] == "succeeded"][-1]["body"])
    assert final["job"]["id"] == job["id"] and final["job"]["status"] == "succeeded"
    assert final["job"]["output"]["images"][0]["url"].startswith("http")  # outputs come with presigned URLs
    record = client.wait_for(job["id"], lambda j: sum(d["ok"] for d in j["webhook_deliveries"]) == 2)
    by_event = {e: [d for d in record["webhook_deliveries"] if d["event"] == e] for e in ("running", "succeeded")}
    for attempts in by_event.values():
        assert [(d["attempt"], d["ok"], d["status_code"]) for d in attempts] == [(1, False, 503), (2, True, 204)]
        assert attempts[0]["next_attempt_in_s"] > 0 and attempts[1].get("next_attempt_in_s") is None


@pytest.mark.e2e
def test_attempts_are_bounded_when_the_target_stays_down(client: Client, worker: WorkerProcess,
                                                         trained_model: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}/nobody-listens"
    job = client.http.post(f"{client.base}/v1/jobs", timeout=10, json={
        "type": "generate_images", "input": {"conditions": {"class": "Dress"}, "n": 1, "model": trained_model},
        "webhook": dead}).json()
    assert client.wait(job["id"], timeout=120)["status"] == "succeeded"
    record = client.wait_for(job["id"], lambda j: len(j["webhook_deliveries"]) == 3, timeout=60)
    attempts = record["webhook_deliveries"]
    assert [d["attempt"] for d in attempts] == [1, 2, 3] and not any(d["ok"] for d in attempts)
    assert "ConnectionError" in attempts[0]["error"]
    assert attempts[1]["next_attempt_in_s"] > attempts[0]["next_attempt_in_s"] * 1.3  # backoff grows
    assert attempts[2].get("next_attempt_in_s") is None  # the last one: no more
    time.sleep(2)
    assert len(client.get(job["id"])["webhook_deliveries"]) == 3

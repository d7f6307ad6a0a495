"""Prometheus /metrics over HTTP, read with the client library's own parser: job counts by type and
status, queue depth per queue, duration histograms, and the worker's memory."""

from __future__ import annotations

import time

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import StoreCollector
from shared.queue import QUEUES
from tests.support import Client, WorkerProcess

pytestmark = pytest.mark.e2e


def scrape(base: str) -> dict[str, list]:
    response = requests.get(f"{base}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def settled(client: Client, job_type: str, timeout: float = 60) -> tuple[dict[str, list], int]:
    """A scrape taken once the jobs of this type that were queued or running have ended (one left by
    an earlier test would otherwise finish between two scrapes and be counted as this test's), and
    how many of them had not ended within `timeout` and so may still be counted. Not read off the
    `atelier_jobs` gauge: it also counts the jobs tests/test_job_store.py writes straight into the
    same database, which no worker ever runs."""
    deadline = time.monotonic() + timeout
    pending = 0
    for status in ("queued", "running"):
        listed = client.http.get(f"{client.base}/v1/jobs", params={"status": status, "type": job_type, "limit": 100},
                                 timeout=10).json()["jobs"]
        for job in listed:
            ended = client.wait(job["id"], timeout=max(1.0, deadline - time.monotonic()))
            pending += ended["status"] not in ("succeeded", "failed", "canceled")
    return scrape(client.base), pending


def value(samples: list, name: str, **labels: str) -> float | None:
    for sample in samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


def test_metrics_follow_jobs_through_their_lifecycle(client: Client, worker: WorkerProcess,
                                                     trained_model: str) -> None:
    before, pending = settled(client, "generate_images")
    done_before = value(before.get("atelier_jobs_finished", []), "atelier_jobs_finished_total",
                        type="generate_images", status="succeeded") or 0
    job = client.submit("generate_images", {"conditions": {"class": "Bag"}, "n": 2, "model": trained_model})
    assert client.wait(job["id"])["status"] == "succeeded"
    after = scrape(client.base)
    done = value(after["atelier_jobs_finished"], "atelier_jobs_finished_total", type="generate_images",
                 status="succeeded")
    assert done is not None and done_before + 1 <= done <= done_before + 1 + pending, (done_before, done, pending)
    assert value(after["atelier_jobs_finished"], "atelier_jobs_finished_total", type="train",
                 status="succeeded") >= 1
    # queued/running are current counts, never negative
    assert all(s.value >= 0 for s in after["atelier_jobs"])
    assert {s.labels["queue"] for s in after["atelier_queue_depth"]} == set(QUEUES)
    durations = after["atelier_job_duration_seconds"]
    count = value(durations, "atelier_job_duration_seconds_count", type="generate_images", status="succeeded")
    assert count >= 1
    assert value(durations, "atelier_job_duration_seconds_bucket", type="generate_images", status="succeeded",
                 le="+Inf") == count
    assert value(durations, "atelier_job_duration_seconds_sum", type="generate_images", status="succeeded") > 0
    rss = after["atelier_worker_resident_memory_bytes"]
    assert rss and all(s.value > 50e6 for s in rss)  # a worker with torch loaded
    assert any("w1@" in s.labels["worker"] and "interactive" in s.labels["role"] for s in rss)


class _NoScan:
    """A Redis client that fails any scan of the keyspace."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def __getattr__(self, name: str) -> object:
        if name in ("scan", "scan_iter", "keys"):
            raise AssertionError(f"/metrics called {name}: a scan of the whole keyspace on every scrape")
        return getattr(self._client, name)


def test_a_scrape_reads_indexes_not_the_keyspace(env: dict[str, str], client: Client, worker: WorkerProcess,
                                                 trained_model: str) -> None:
    """Finding 21: durations and worker memory come from index keys written beside them."""
    done = client.wait(client.submit("generate_images", {"conditions": {"class": "Bag"}, "n": 1,
                                                         "model": trained_model})["id"])
    assert done["status"] == "succeeded"
    families = {f.name: f for f in StoreCollector(_NoScan(redis.Redis.from_url(env["REDIS_URL"],
                                                                                decode_responses=True))).collect()}
    durations = families["atelier_job_duration_seconds"].samples
    assert any(s.labels.get("type") == "generate_images" and s.name.endswith("_count") and s.value >= 1
               for s in durations)
    assert families["atelier_worker_resident_memory_bytes"].samples  # the test worker publishes every 10 s

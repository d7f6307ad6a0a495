"""Prometheus /metrics. Every figure is read from Redis at scrape time, so any API replica answers
for the whole service: jobs by type and status, queue depth per queue, job durations (recorded by
the job store when a job ends), and each worker process's memory."""

from __future__ import annotations

from collections.abc import Iterator

import redis
from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.queue import QUEUES
from shared.schemas import JobStatus
from shared.webhooks import OUTBOX
from shared.worker_stats import KEY_PREFIX as WORKERS_PREFIX
from shared.worker_stats import live_workers

JOB_COUNTS = "atelier:stats:jobs"
DURATIONS_PREFIX = "atelier:stats:duration:"
DURATIONS_INDEX = "atelier:stats:duration-index"  # every histogram key, written with it (shared/jobs.py)
CURRENT = {JobStatus.QUEUED.value, JobStatus.RUNNING.value}

metrics_bp = Blueprint("metrics", __name__)


class StoreCollector(Collector):
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def collect(self) -> Iterator[Metric]:
        current = GaugeMetricFamily("atelier_jobs", "Jobs queued or running now", labels=["type", "status"])
        ended = CounterMetricFamily("atelier_jobs_finished", "Jobs that ended, by type and status",
                                    labels=["type", "status"])
        for field, value in sorted(self.redis.hgetall(JOB_COUNTS).items()):
            job_type, _, status = field.partition("|")
            (current if status in CURRENT else ended).add_metric([job_type, status], max(int(value), 0))
        yield current
        yield ended

        depth = GaugeMetricFamily("atelier_queue_depth", "Tasks waiting in each Celery queue", labels=["queue"])
        for queue in QUEUES:
            depth.add_metric([queue], self.redis.llen(queue))
        yield depth
        yield GaugeMetricFamily("atelier_webhook_outbox", "Webhook events not yet handed to a delivery task",
                                value=self.redis.zcard(OUTBOX))

        durations = HistogramMetricFamily("atelier_job_duration_seconds", "Job run time, start to end",
                                          labels=["type", "status"])
        for key in sorted(self.redis.smembers(DURATIONS_INDEX)):
            job_type, _, status = key[len(DURATIONS_PREFIX):].partition("|")
            data = self.redis.hgetall(key)
            buckets = sorted(((float(k), int(v)) for k, v in data.items() if k not in ("count", "sum")))
            series = [(_le(bound), count) for bound, count in buckets] + [("+Inf", int(data.get("count", 0)))]
            durations.add_metric([job_type, status], series, sum_value=float(data.get("sum", 0)))
        yield durations

        rss = GaugeMetricFamily("atelier_worker_resident_memory_bytes", "Resident memory of each worker process",
                                labels=["worker", "role"])
        gpu = GaugeMetricFamily("atelier_worker_gpu_memory_bytes", "CUDA memory of each worker process",
                                labels=["worker", "kind"])
        for name in live_workers(self.redis):
            data = self.redis.hgetall(WORKERS_PREFIX + name)
            if not data:  # expired since it was indexed
                continue
            if "rss" in data:
                rss.add_metric([name, data.get("role", "")], int(data["rss"]))
            for kind in ("allocated", "reserved"):
                if f"gpu_{kind}" in data:
                    gpu.add_metric([name, kind], int(data[f"gpu_{kind}"]))
        yield rss
        yield gpu


def _le(bound: float) -> str:
    return str(int(bound)) if bound == int(bound) else str(bound)


def metrics_registry(client: redis.Redis) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(client))
    return registry


@metrics_bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format."""
    return Response(generate_latest(current_app.extensions["atelier_metrics"]), mimetype=CONTENT_TYPE_LATEST)

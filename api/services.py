"""What the API's views need, built once per process from the settings and kept on the app."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from flask import current_app

from shared.image_urls import ImageUrlSigner
from shared.jobs import JobStore
from shared.queue import make_celery
from shared.registry import ModelRegistry
from shared.settings import Settings
from shared.storage import Storage

API_S3_DEADLINE_S = 3.0


@dataclass
class Services:
    settings: Settings
    store: JobStore
    registry: ModelRegistry
    storage: Storage
    celery: Celery
    image_urls: ImageUrlSigner

    @classmethod
    def build(cls, settings: Settings) -> Services:
        store = JobStore.from_url(settings.redis_url, ttl_s=settings.job_ttl_s,
                                  idempotency_ttl_s=settings.idempotency_ttl_s)
        return cls(settings=settings, store=store, registry=ModelRegistry(store.redis),
                   # a request must not hang through an outage: 503 within seconds
                   storage=Storage(settings, retry_deadline_s=min(settings.s3_retry_deadline_s, API_S3_DEADLINE_S)),
                   celery=make_celery(settings, name="atelier-api"), image_urls=ImageUrlSigner.from_settings(settings))


def services() -> Services:
    return current_app.extensions["atelier"]

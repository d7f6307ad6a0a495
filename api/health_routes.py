"""Liveness and readiness probes."""

from __future__ import annotations

import logging

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag

from api.services import services
from shared.schemas import Health, Readiness

log = logging.getLogger(__name__)
health_bp = APIBlueprint("health", __name__, abp_tags=[Tag(name="health")])


@health_bp.get("/healthz", responses={"200": Health})
def healthz() -> Response:
    """The process is alive."""
    return jsonify(status="ok")


@health_bp.get("/readyz", responses={"200": Readiness, "503": Readiness})
def readyz() -> Response:
    """Redis and object storage both answer; 503 names the one that does not."""
    svc = services()
    checks: dict[str, str] = {}
    try:
        svc.store.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:  # any failure means not ready; say which
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    try:
        svc.storage.ensure_bucket()
        svc.storage.ping()
        checks["s3"] = "ok"
    except Exception as exc:
        checks["s3"] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    if not ready:
        log.warning("not ready: %s", checks)
    response = jsonify(status="ready" if ready else "unavailable", checks=checks)
    response.status_code = 200 if ready else 503
    return response

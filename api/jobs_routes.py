"""/v1/jobs: submit, read, list, cancel."""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from botocore.exceptions import ClientError
from flask import Response, current_app, jsonify, request, send_file
from flask_openapi3 import APIBlueprint, Tag

from api.auth import BEARER, current_caller
from api.errors import error_response
from api.services import services
from api.submit_checks import check_submit
from shared.errors import AtelierError, Conflict, Forbidden, NotFound, ValidationFailed
from shared.image_urls import api_address
from shared.jobs import TERMINAL_EVENTS, collect_keys, public_view, request_fingerprint
from shared.queue import task_send
from shared.schemas import (
    SEED_MAX,
    AugmentJobRequest,
    ErrorResponse,
    Job,
    JobList,
    JobPath,
    JobRequest,
    JobStatus,
    JobType,
    ListJobsQuery,
    WebhookSpec,
)
from shared.webhooks import dispatch_outbox, resolve_target

log = logging.getLogger(__name__)
jobs_bp = APIBlueprint("jobs", __name__, url_prefix="/v1/jobs", abp_tags=[Tag(name="jobs")],
                       abp_security=BEARER,
                       abp_responses={"401": ErrorResponse, "404": ErrorResponse, "422": ErrorResponse})

_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d{1,4})(?:$|[,;\s])")
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


@jobs_bp.before_request
def _require_json_object() -> Response | None:
    """Malformed or non-JSON bodies get a precise 4xx before schema validation sees them."""
    if request.method != "POST" or request.path.endswith("/cancel"):
        return None
    if not request.is_json:
        return error_response(415, "unsupported_media_type", "send the job as application/json",
                              field="Content-Type")
    body = request.get_json(silent=True)
    if body is None:
        return error_response(400, "invalid_json", "the request body is not valid JSON", field="body")
    if not isinstance(body, dict):
        return error_response(422, "validation_error", "the request body must be a JSON object", field="body")
    return None


def wait_seconds() -> float:
    """`Prefer: wait=N` (RFC 7240), capped by the setting."""
    prefer = request.headers.get("Prefer")
    if not prefer:  # most requests: no regex, no settings lookup
        return 0.0
    match = _PREFER_WAIT.search(prefer)
    return min(float(match.group(1)), services().settings.max_wait_s) if match else 0.0


_waiting: Counter[str] = Counter()
_waiting_lock = threading.Lock()


@contextmanager
def wait_slot(wait: float) -> Iterator[float]:
    """The wait this request may have: `wait`, or 0 when its key already holds `max_waits_per_key`
    open requests in this process (a preference may be ignored, RFC 7240), so one key cannot take
    every thread of the API. With keys off there is one owner and no limit."""
    if not wait:
        yield 0.0
        return
    owner, limit = current_caller().owner, services().settings.max_waits_per_key
    if not current_app.extensions["atelier_keys"].enabled:
        limit = 0  # keys off: one development owner, nobody else to starve
    with _waiting_lock:
        granted = not limit or _waiting[owner] < limit
        if granted:
            _waiting[owner] += 1
    try:
        yield wait if granted else 0.0
    finally:
        if granted:
            with _waiting_lock:
                _waiting[owner] -= 1


def public_job(job: Job) -> dict[str, Any]:
    svc = services()
    # Only a job with outputs can have image URLs (public_view signs nothing otherwise), so the API's
    # address, whose request.host_url rebuilds and re-encodes the URL, is worked out only for those.
    image_url = partial(svc.image_urls.url, api_address(svc.settings, request.host_url)) if job.output else None
    return public_view(job, svc.storage.presigned_url, image_url=image_url)


def _job_response(job: Job, status: int) -> Response:
    response = jsonify(public_job(job))
    response.status_code = status
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return response


@jobs_bp.post("", responses={"202": Job, "200": Job, "400": ErrorResponse, "403": ErrorResponse, "409": ErrorResponse,
                             "429": ErrorResponse, "413": ErrorResponse, "415": ErrorResponse, "503": ErrorResponse})
def submit_job(body: JobRequest) -> Response:
    """Submit a job. Answers 202 with the job and its Location. `Idempotency-Key` makes a retried
    submit return the first job (200); `Prefer: wait=N` (N <= 60) holds the answer until the job ends."""
    return submit(body.root)


def _webhook(req: Any) -> tuple[str | None, tuple[str, ...]]:
    """The job's webhook URL and events, refused at submit when it could not be delivered."""
    if req.webhook is None:
        return None, TERMINAL_EVENTS
    spec = req.webhook if isinstance(req.webhook, WebhookSpec) else WebhookSpec(url=req.webhook)
    settings = services().settings
    if not settings.webhook_secret:
        raise ValidationFailed("webhooks are off: the operator has not set ATELIER_WEBHOOK_SECRET",
                               code="webhooks_not_configured", field="webhook")
    field = "webhook.url" if isinstance(req.webhook, WebhookSpec) else "webhook"
    resolve_target(spec.url, allow_private=settings.webhook_allow_private, field=field)
    return spec.url, tuple(dict.fromkeys(spec.events))


def submit(req: Any) -> Response:
    """Create the job record, enqueue it, and answer (shared with POST /v1/datasets)."""
    svc = services()
    caller = current_caller()
    idem = request.headers.get("Idempotency-Key")
    if idem is not None and not _IDEMPOTENCY_KEY.match(idem):
        raise AtelierError("Idempotency-Key must be 1..255 printable ASCII characters",
                           code="invalid_header", field="Idempotency-Key")
    # Fingerprint what the caller sent, before any model version is pinned into the input. Only an
    # Idempotency-Key's replay compares it, so a submit without one skips the dump and the hash.
    fingerprint = request_fingerprint(req.model_dump(mode="json", exclude_none=True)) if idem is not None else None
    webhook, events = _webhook(req)
    model = check_submit(req)
    job_input = req.input.model_dump(mode="json", exclude_none=True)
    # A seed is always recorded, so every job can be reproduced from its record and manifest.
    if "seed" in type(req.input).model_fields:
        job_input.setdefault("seed", secrets.randbelow(SEED_MAX + 1))
    if isinstance(req, AugmentJobRequest):  # the date it files under, fixed now rather than when it runs
        job_input.setdefault("date", svc.settings.today().isoformat())
    # The record, its indexes and the Celery message in one script: one round trip, no kombu, and no
    # job without its message (a Redis that cannot be reached is a 503 from the error handler).
    job_type = JobType(req.type)
    job, created = svc.store.create(job_type, job_input, owner=caller.owner, webhook=webhook,
                                    webhook_events=events, idempotency_key=idem, model=model,
                                    fingerprint=fingerprint, max_queued=caller.max_queued,
                                    retry_after_s=svc.settings.queue_limit_retry_after_s,
                                    send=task_send(svc.settings, job_type))
    with wait_slot(wait_seconds()) as wait:
        if wait:
            job = svc.store.wait_until_terminal(job.id, wait) or job
    response = _job_response(job, 202 if created and not job.status.terminal else 200)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    if wait:
        response.headers["Preference-Applied"] = f"wait={int(wait)}"
    return response


def owned_job(job_id: str) -> Job:
    """The job if the caller may see it (its owner, or an admin); otherwise the same 404 as a job
    that does not exist, so ids of other keys' jobs cannot be probed."""
    caller = current_caller()
    job = services().store.get(job_id)
    if job is None or not (caller.admin or job.owner == caller.owner):
        raise NotFound(f"no job {job_id}", field="job_id")
    return job


@jobs_bp.get("/<job_id>", responses={"200": Job})
def get_job(path: JobPath) -> Response:
    """A job's status, progress and (when finished) outputs with presigned URLs.
    `Prefer: wait=N` holds the answer until the job ends or N seconds pass."""
    job = owned_job(path.job_id)
    with wait_slot(wait_seconds() if not job.status.terminal else 0.0) as wait:
        if wait:
            job = services().store.wait_until_terminal(job.id, wait) or job
    response = jsonify(public_job(job))
    if wait:
        response.headers["Preference-Applied"] = f"wait={int(wait)}"
    return response


@jobs_bp.get("", responses={"200": JobList, "403": ErrorResponse})
def list_jobs(query: ListJobsQuery) -> Response:
    """Jobs newest first, filtered by status and type; pass `next_cursor` back as `cursor`. A key
    sees its own jobs; an admin key sees everyone's (or one owner's with `owner`)."""
    caller = current_caller()
    if query.owner and not caller.admin and query.owner != caller.owner:
        raise Forbidden("only an admin key may list another key's jobs", code="admin_only", field="owner")
    owner = (query.owner or None) if caller.admin else caller.owner
    jobs, cursor = services().store.list(owner=owner, status=query.status, job_type=query.type,
                                         limit=query.limit, cursor=query.cursor)
    return jsonify(jobs=[public_job(j) for j in jobs], next_cursor=cursor)


ZIP_RESPONSE = {"description": "a zip of the job's outputs and its record (job.json)",
                "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}}


@jobs_bp.get("/<job_id>/archive", responses={"200": ZIP_RESPONSE, "409": ErrorResponse})
def download_archive(path: JobPath) -> Response:
    """Every output object of a finished job, and its record, as one zip (`<job id>/...` inside)."""
    job = owned_job(path.job_id)
    if job.status != JobStatus.SUCCEEDED:
        raise Conflict(f"job {job.id} is {job.status.value}; only a succeeded job has outputs to download",
                       code="job_not_succeeded", field="job_id")
    spool = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # spills to disk for big models
    storage, missing = services().storage, []
    images_archive = ((job.output or {}).get("images_archive") or {}).get("key")
    with zipfile.ZipFile(spool, "w") as archive:
        for key in dict.fromkeys(collect_keys(job.output)):
            name = archive_name(job.id, key)
            stored = key.endswith((".png", ".jpg", ".pt", ".npz"))  # already compressed
            info = zipfile.ZipInfo(name, date_time=time.gmtime()[:6])
            info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            # Streamed through a buffer that spills to disk: a 500 MB train.npz never sits in the API's
            # memory, and an object that turns out missing leaves no empty entry behind.
            with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as buffer:
                try:
                    storage.copy_to(key, buffer)
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchKey", "NotFound"}:
                        raise
                    missing.append(key)  # deleted since the job ended (a model version removed, say)
                    continue
                # an outage (TransientError) is not "missing": it propagates as a 503 with Retry-After
                buffer.seek(0)
                if key == images_archive:  # unpacked: the download holds images/000.png, ... as before
                    with zipfile.ZipFile(buffer) as images:
                        for image in images.infolist():
                            archive.writestr(archive_name(job.id, f"images/{image.filename}"),
                                             images.read(image), compress_type=zipfile.ZIP_STORED)
                    continue
                with archive.open(info, "w", force_zip64=True) as member:
                    shutil.copyfileobj(buffer, member, 1024 * 1024)
        record = {**job.model_dump(mode="json", exclude={"webhook_deliveries"}), "missing_objects": missing}
        archive.writestr(f"{job.id}/job.json", json.dumps(record, indent=2), compress_type=zipfile.ZIP_DEFLATED)
    spool.seek(0)
    return send_file(spool, mimetype="application/zip", as_attachment=True, download_name=f"atelier-{job.id}.zip")


def archive_name(job_id: str, key: str) -> str:
    """Where an object goes in the zip: the job's own files relative to it, others by their key; never a
    path that climbs out of the folder it is unpacked in."""
    own = f"jobs/{job_id}/"
    relative = key[len(own):] if key.startswith(own) else key
    parts = [p for p in relative.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join([job_id, *parts])


@jobs_bp.post("/<job_id>/cancel", responses={"200": Job, "202": Job, "409": ErrorResponse})
def cancel_job(path: JobPath) -> Response:
    """Cancel: a queued job is canceled at once (200); a running job is asked to stop and stops at
    its next check (202); a finished job is a 409."""
    job = owned_job(path.job_id)
    svc = services()
    outcome, ended_as = svc.store.cancel(job.id)
    if outcome == "canceled":
        dispatch_outbox(svc.store.redis, svc.celery)
    if outcome == "missing":
        raise NotFound(f"no job {job.id}", field="job_id")
    if outcome == "finished":
        raise Conflict(f"job {job.id} already ended ({ended_as}); nothing to cancel", code="job_finished")
    job = services().store.get(job.id) or job
    return _job_response(job, 200 if outcome == "canceled" else 202)



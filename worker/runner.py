"""The lifecycle every job task shares: claim the job, keep its lease alive, run the plain handler
with `progress` and `should_stop`, and record how it ended. Celery stays at the edge: a task body
is one call to `run_job`."""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from shared.errors import AtelierError, JobCanceled, TransientError
from shared.jobs import JobStore
from shared.logs import current_job_id
from shared.schemas import Job, JobStatus, JobType
from shared.webhooks import dispatch_outbox
from worker.context import WorkerContext

log = logging.getLogger(__name__)

Handler = Callable[[WorkerContext, Job, Callable[[float, str], None], Callable[[], bool]], dict]


class JobSession:
    """Owns one running job: a heartbeat thread renews the lease and learns of cancel requests;
    progress writes are throttled so a tight training loop costs Redis almost nothing."""

    def __init__(self, store: JobStore, job_id: str, token: str, *, lease_s: float, heartbeat_s: float,
                 progress_interval_s: float = 0.5) -> None:
        self.store, self.job_id, self.token = store, job_id, token
        self.lease_s, self.heartbeat_s = lease_s, heartbeat_s
        self.progress_interval_s = progress_interval_s
        self.cancel_requested = threading.Event()
        self.lost = threading.Event()  # another worker owns the job now
        self._stop = threading.Event()
        self._last_progress = 0.0
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> JobSession:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                state = self.store.heartbeat(self.job_id, self.token, lease_s=self.lease_s)
            except Exception as exc:  # a Redis blip must not kill the job; the lease has slack
                log.warning("heartbeat failed for job %s: %s", self.job_id, exc)
                continue
            if state == 1:
                self.cancel_requested.set()
            elif state == -1:
                self.lost.set()
                return

    def progress(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - self._last_progress < self.progress_interval_s and fraction < 1.0:
            return
        self._last_progress = now
        try:
            if not self.store.set_progress(self.job_id, self.token, fraction, message):
                self.lost.set()
        except Exception as exc:
            log.warning("progress update failed for job %s: %s", self.job_id, exc)

    def should_stop(self) -> bool:
        return self.cancel_requested.is_set() or self.lost.is_set()

    def finish(self, status: JobStatus, **kwargs: Any) -> None:
        if not self.store.finish(self.job_id, self.token, status, **kwargs):
            log.warning("job %s was no longer ours when it ended %s; result dropped", self.job_id, status)


def run_job(ctx: WorkerContext, task: Task, job_id: str, handler: Handler) -> None:
    settings, store = ctx.settings, ctx.store
    token = uuid.uuid4().hex
    reset = current_job_id.set(job_id)
    try:
        claim = store.claim(job_id, token, lease_s=settings.job_lease_s, max_attempts=settings.job_max_attempts)
        if claim.state == "busy":
            # A redelivered copy while the first run still holds its lease: look again when it expires.
            raise task.retry(countdown=math.ceil(claim.retry_in_s) + 1, max_retries=None)
        if claim.state != "claimed":
            log.info("job %s not run: %s", job_id, claim.state)
            return
        store.claimed_after_requeue(job_id)  # the reaper may send a new copy if this run is lost too
        job = store.get(job_id)
        assert job is not None
        log.info("job %s (%s) started, attempt %d", job_id, job.type, claim.attempts)
        session = JobSession(store, job_id, token, lease_s=settings.job_lease_s, heartbeat_s=settings.heartbeat_s)
        with session:
            execute(ctx, job, session, handler)
    finally:
        _dispatch_webhooks(store, task)
        current_job_id.reset(reset)


def _dispatch_webhooks(store: JobStore, task: Task) -> None:
    """Send the webhook events this run produced (started, ended) now rather than at the next reap."""
    try:
        dispatch_outbox(store.redis, task.app)
    except Exception as exc:  # the reaper dispatches whatever is left
        log.warning("webhook dispatch failed: %s", exc)


def execute(ctx: WorkerContext, job: Job, session: JobSession, handler: Handler) -> None:
    """Run a claimed job's handler and record how it ended (also for jobs batched into another's run)."""
    started = time.monotonic()
    try:
        output = handler(ctx, job, session.progress, session.should_stop)
    except JobCanceled:
        if session.lost.is_set():
            log.warning("job %s was taken over by another worker; stopping", job.id)
            return
        _drop_checkpoint(ctx, job)  # before the status changes: whoever sees "canceled" sees it gone
        session.finish(JobStatus.CANCELED, progress_message="canceled")
        log.info("job %s canceled", job.id)
    except AtelierError as exc:
        _drop_checkpoint(ctx, job)
        session.finish(JobStatus.FAILED, error=exc.to_dict())  # code, message, field, details
        log.info("job %s failed: %s %s", job.id, exc.code, exc.message)
    except SoftTimeLimitExceeded:
        _drop_checkpoint(ctx, job)
        session.finish(JobStatus.FAILED, error={"code": "timeout", "message": "the job ran past its time limit"})
        log.warning("job %s hit its time limit", job.id)
    except TransientError as exc:
        session.finish(JobStatus.FAILED, error={"code": "dependency_unavailable",
                                                "message": f"{exc}; submit the job again later"})
        log.error("job %s failed on an unavailable dependency: %s", job.id, exc)
    except Exception:
        log.exception("job %s failed unexpectedly", job.id)
        _drop_checkpoint(ctx, job)
        session.finish(JobStatus.FAILED, error={
            "code": "internal_error",
            "message": f"the job failed unexpectedly; operators can find the traceback under job id {job.id}"})
    else:
        session.finish(JobStatus.SUCCEEDED, output=output)
        log.info("job %s succeeded in %.1fs", job.id, time.monotonic() - started)


def _drop_checkpoint(ctx: WorkerContext, job: Job) -> None:
    """A training that failed or was canceled will not resume (a new job starts afresh): its
    per-epoch checkpoint is deleted rather than kept for ever (a success deletes it on publishing)."""
    if job.type != JobType.TRAIN:
        return
    try:
        ctx.storage.delete(f"jobs/{job.id}/checkpoint.pt")
    except Exception as exc:  # cleanup must never change how the job ended
        log.warning("could not delete the checkpoint of job %s: %s", job.id, exc)

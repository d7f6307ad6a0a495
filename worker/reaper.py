"""Finds jobs nobody is working on and puts them back in the queue (run by beat every few seconds).

- running jobs whose lease expired: their whole worker died, and Redis will only redeliver the
  message after the visibility timeout (hours). A new message lets a live worker take over (the
  claim counts the attempt and gives up with `worker_lost` after the limit).
- queued jobs whose enqueue was never confirmed: the API died between the record and the send.
It also dispatches webhook events left in the outbox, and rebuilds the model registry from object
storage when Redis has lost it.
A marker key keeps one re-enqueued message per job until a worker claims it, so a backed-up queue is not
flooded with copies.
"""

from __future__ import annotations

import logging

from celery import Celery

from shared.queue import JOB_TASKS
from shared.webhooks import dispatch_outbox
from worker.context import WorkerContext

log = logging.getLogger(__name__)
REQUEUE_AGAIN_S = 900


def reap_stale_jobs(ctx: WorkerContext, app: Celery, unsent_after_s: float = 30.0) -> dict:
    store = ctx.store
    requeued: list[str] = []
    candidates = [(job_id, "stale") for job_id in store.stale_running()]
    candidates += [(job_id, "unsent") for job_id in store.unsent_older_than(unsent_after_s)]
    for job_id, reason in candidates:
        job = store.get(job_id)
        if job is None or job.status.terminal:
            store.mark_enqueued(job_id)
            continue
        # The marker lasts until a worker claims the job (runner) or REQUEUE_AGAIN_S, so a backed-up
        # queue gets one recovery message per job every 15 minutes, not one every lease period; a copy
        # lost with the queue itself is still replaced.
        marker_s = max(int(ctx.settings.job_lease_s * 2), REQUEUE_AGAIN_S)
        if not store.redis.set(store.requeue_marker(job_id), reason, nx=True, ex=marker_s):
            continue
        spec = JOB_TASKS[job.type]
        app.send_task(spec.name, args=[job_id], queue=spec.queue)
        store.mark_enqueued(job_id)
        requeued.append(job_id)
        log.warning("re-enqueued job %s (%s)", job_id, reason)
    pruned = store.prune_index()  # expired records leave the all-jobs index instead of growing it for ever
    restored = ctx.registry.restore(ctx.storage) if ctx.registry.is_empty() else []
    if restored:
        log.warning("model registry was empty: restored %d versions from object storage (inactive): %s",
                    len(restored), ", ".join(restored))
    return {"requeued": requeued, "webhooks_dispatched": dispatch_outbox(store.redis, app), "restored": restored,
            "pruned": pruned}

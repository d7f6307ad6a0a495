"""Finds jobs nobody is working on and puts them back in the queue (run by beat every few seconds).

- running jobs whose lease expired: their whole worker died, and Redis will only redeliver the
  message after the visibility timeout (hours). A new message lets a live worker take over (the
  claim counts the attempt and gives up with `worker_lost` after the limit).
- queued jobs whose enqueue was never confirmed: the API died between the record and the send.
- queued jobs whose message is in no queue: kombu's Redis transport takes a message off the list and
  records it as unacked in two steps, so a connection (or a Redis) lost in between loses it, and the
  job would wait for ever. Checked once a `lost_message_after_s` period, for jobs queued that long.
It also dispatches webhook events left in the outbox, and rebuilds the model registry from object
storage when Redis has lost it.
A marker key keeps one re-enqueued message per job until a worker claims it, so a backed-up queue is not
flooded with copies.
"""

from __future__ import annotations

import logging

from celery import Celery

from shared.celery_message import queue_key, read_task
from shared.jobs import PREFIX, JobStore
from shared.queue import JOB_TASKS
from shared.schemas import JobStatus, JobType
from shared.webhooks import dispatch_outbox
from worker.context import WorkerContext

log = logging.getLogger(__name__)
REQUEUE_AGAIN_S = 900
# A queue longer than this is not scanned for lost messages: its oldest jobs are waiting, not lost, and
# reading it all each check would cost more than the check saves (the scan resumes once it drains).
LOST_CHECK_MAX_MESSAGES = 20_000
LOST_CHECK_KEY = f"{PREFIX}reaper:lost-message-check"  # at most one scan a period, however many beats


def queued_without_a_message(store: JobStore, age_s: float) -> list[str]:
    """Jobs queued for more than `age_s` whose message is in no queue list. A message a worker has
    taken but not yet claimed is missed for a moment: its job gets a second message, which a claim
    turns away (the job is running or done by then)."""
    candidates = store.queued_older_than(age_s)
    if not candidates:
        return []
    pipe = store.redis.pipeline(transaction=False)
    for job_id in candidates:
        pipe.hmget(store.key(job_id), "type", "status")
    wanted: dict[str, set[str]] = {}
    gone: list[str] = []
    for job_id, (job_type, status) in zip(candidates, pipe.execute(), strict=True):
        if status != JobStatus.QUEUED.value:  # expired, or the scripts missed it (an older record)
            gone.append(job_id)
        else:
            wanted.setdefault(JOB_TASKS[JobType(job_type)].queue, set()).add(job_id)
    store.forget_queued(*gone)
    missing: list[str] = []
    for queue, ids in wanted.items():
        key = queue_key(queue)
        if store.redis.llen(key) > LOST_CHECK_MAX_MESSAGES:
            continue
        start = 0  # from the head: pushes there only make the scan read a message twice, never skip one
        while ids:
            chunk = store.redis.lrange(key, start, start + 999)
            if not chunk:
                break
            for raw in chunk:
                task = read_task(raw)
                if task and task[1]:
                    ids.discard(task[1][0])
            start += len(chunk)
        missing += sorted(ids)
    return missing


def reap_stale_jobs(ctx: WorkerContext, app: Celery, unsent_after_s: float = 30.0) -> dict:
    store = ctx.store
    requeued: list[str] = []
    candidates = [(job_id, "stale") for job_id in store.stale_running()]
    candidates += [(job_id, "unsent") for job_id in store.unsent_older_than(unsent_after_s)]
    lost_after_s = ctx.settings.lost_message_after_s
    if store.redis.set(LOST_CHECK_KEY, "1", nx=True, ex=max(1, int(lost_after_s))):
        candidates += [(job_id, "lost") for job_id in queued_without_a_message(store, lost_after_s)]
    for job_id, reason in candidates:
        job = store.get(job_id)
        if job is None or job.status.terminal:
            store.mark_enqueued(job_id)
            continue
        if reason == "lost" and job.status != JobStatus.QUEUED:  # a worker took it while the queue was read
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

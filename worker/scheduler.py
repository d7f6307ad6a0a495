"""The nightly schedule: beat calls `schedule_nightly_augment` at the configured time, which submits
one `augment` job per configured dataset for today's date (in the schedule's timezone).

Submitting is idempotent per dataset and date (an idempotency key), so a second beat, a restarted
beat catching up, or a retried call never queues the same night twice; the job itself is
idempotent per dataset and date as well (worker/handlers/augment.py)."""

from __future__ import annotations

import logging
from datetime import date

from celery.schedules import crontab

from shared.jobs import DEFAULT_OWNER
from shared.queue import SCHEDULE_AUGMENT_TASK, task_send
from shared.schemas import JobType
from shared.settings import Settings
from worker.context import WorkerContext

log = logging.getLogger(__name__)


def nightly_entry(settings: Settings) -> dict:
    """The beat schedule entry, at `augment_time` in `augment_timezone` (the app's timezone)."""
    hour, minute = settings.augment_time.split(":")
    return {"task": SCHEDULE_AUGMENT_TASK, "schedule": crontab(hour=int(hour), minute=int(minute)),
            "options": {"expires": 3600}}  # a beat that was down all night does not fire it at noon


def schedule_nightly_augment(ctx: WorkerContext, day: date | None = None) -> dict[str, dict]:
    """Submit today's augment job for each configured dataset; returns {dataset: {job_id, created}}."""
    day = day or ctx.settings.today()
    submitted: dict[str, dict] = {}
    for dataset in ctx.settings.augment_dataset_names:
        # the record and its message in one script, as the API submits (shared/celery_message.py)
        job, created = ctx.store.create(JobType.AUGMENT, {"dataset": dataset, "date": day.isoformat()},
                                        owner=DEFAULT_OWNER, idempotency_key=f"nightly-augment:{dataset}:{day}",
                                        send=task_send(ctx.settings, JobType.AUGMENT))
        if created:
            log.info("nightly augment of %s for %s: job %s", dataset, day, job.id)
        submitted[dataset] = {"job_id": job.id, "created": created}
    return submitted

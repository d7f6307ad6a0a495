"""The worker's Celery app: the shared queue configuration, one thin task per job type, the reaper
and the beat schedule. `create_worker_app(settings)` builds it; `worker.main` is the entry point."""

from __future__ import annotations

import logging
import threading

from celery import Celery, Task
from celery.signals import worker_process_init

from shared.logs import configure_logging
from shared.queue import JOB_TASKS, REAP_TASK, SCHEDULE_AUGMENT_TASK, make_celery, time_limit_s
from shared.schemas import JobType
from shared.settings import Settings
from worker.context import WorkerContext
from worker.handlers.augment import augment
from worker.handlers.describe import describe
from worker.handlers.explore import hybrid, traverse
from worker.handlers.generate import generate_images
from worker.handlers.import_dataset import import_dataset
from worker.handlers.train import train
from worker.reaper import reap_stale_jobs
from worker.runner import Handler, run_job
from worker.scheduler import nightly_entry, schedule_nightly_augment

log = logging.getLogger(__name__)

HANDLERS: dict[JobType, Handler] = {
    JobType.TRAIN: train,
    JobType.GENERATE_IMAGES: generate_images,
    JobType.IMPORT_DATASET: import_dataset,
    JobType.HYBRID: hybrid,
    JobType.TRAVERSE: traverse,
    JobType.DESCRIBE: describe,
    JobType.AUGMENT: augment,
}


def create_worker_app(settings: Settings) -> Celery:
    app = make_celery(settings)
    ctx = WorkerContext(settings)
    app.conf.timezone = settings.augment_timezone  # crontab entries are local to it
    app.conf.beat_schedule = {
        "reap-stale-jobs": {"task": REAP_TASK, "schedule": settings.reaper_interval_s},
        "nightly-augment": nightly_entry(settings),
    }

    def job_task(job_type: JobType) -> None:
        spec = JOB_TASKS[job_type]
        handler = HANDLERS[job_type]
        limit = time_limit_s(settings, spec.queue)

        @app.task(name=spec.name, bind=True, soft_time_limit=limit, time_limit=limit + 60,
                  acks_late=True, reject_on_worker_lost=True)
        def task(self: Task, job_id: str) -> None:
            run_job(ctx, self, job_id, handler)

    for job_type in HANDLERS:
        job_task(job_type)

    @app.task(name=REAP_TASK, ignore_result=True)
    def reap() -> dict:
        return reap_stale_jobs(ctx, app)

    @app.task(name=SCHEDULE_AUGMENT_TASK, ignore_result=True)
    def schedule_augment() -> dict:
        return schedule_nightly_augment(ctx, app)

    @worker_process_init.connect(weak=False)
    def _child_init(**_: object) -> None:
        configure_logging(settings)  # each pool child logs the same way as the parent
        if settings.preload_interpreter:
            # ~10 s on 2 cores; loading in the background keeps the first prompt job from paying it.
            threading.Thread(target=lambda: ctx.interpreter, name="preload-interpreter", daemon=True).start()

    return app

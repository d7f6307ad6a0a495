"""The worker's Celery app: the shared queue configuration, one thin task per job type, the reaper
and the beat schedule. `create_worker_app(settings)` builds it; `worker.main` is the entry point."""

from __future__ import annotations

import logging
import threading
from functools import cache
from importlib import import_module

from celery import Celery, Task
from celery.signals import celeryd_after_setup, worker_process_init

from shared.logs import configure_logging
from shared.queue import (
    DELIVER_WEBHOOK_TASK,
    JOB_TASKS,
    REAP_TASK,
    SCHEDULE_AUGMENT_TASK,
    make_celery,
    time_limit_s,
)
from shared.schemas import JobType
from shared.settings import Settings
from shared.worker_stats import start_publisher
from worker.context import WorkerContext
from worker.reaper import reap_stale_jobs
from worker.runner import Handler, run_job
from worker.scheduler import nightly_entry, schedule_nightly_augment
from worker.webhook_delivery import deliver

log = logging.getLogger(__name__)

# Handlers by import path, loaded on first use: beat, the webhook notifier and Flower build the same
# app but never run a job, so they never import torch (about 300 MB a process). A job worker loads
# the handlers of its queues before its pool forks (see _node_ready), so children share them.
HANDLERS: dict[JobType, str] = {
    JobType.TRAIN: "worker.handlers.train:train",
    JobType.GENERATE_IMAGES: "worker.handlers.generate:generate_images",
    JobType.IMPORT_DATASET: "worker.handlers.import_dataset:import_dataset",
    JobType.HYBRID: "worker.handlers.explore:hybrid",
    JobType.TRAVERSE: "worker.handlers.explore:traverse",
    JobType.DESCRIBE: "worker.handlers.describe:describe",
    JobType.AUGMENT: "worker.handlers.augment:augment",
    JobType.SIMILAR: "worker.handlers.similar:similar",
}


@cache
def handler_for(job_type: JobType) -> Handler:
    module, _, name = HANDLERS[job_type].partition(":")
    return getattr(import_module(module), name)


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
        limit = time_limit_s(settings, spec.queue)

        @app.task(name=spec.name, bind=True, soft_time_limit=limit, time_limit=limit + 60,
                  acks_late=True, reject_on_worker_lost=True)
        def task(self: Task, job_id: str) -> None:
            run_job(ctx, self, job_id, handler_for(job_type))

    for job_type in HANDLERS:
        job_task(job_type)

    @app.task(name=REAP_TASK, ignore_result=True)
    def reap() -> dict:
        return reap_stale_jobs(ctx, app)

    @app.task(name=DELIVER_WEBHOOK_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True,
              soft_time_limit=settings.webhook_timeout_s * 3)
    def deliver_webhook(job_id: str, event: str, attempt: int = 1) -> None:
        deliver(settings, ctx.store, ctx.storage, app, job_id, event, attempt)

    @app.task(name=SCHEDULE_AUGMENT_TASK, ignore_result=True)
    def schedule_augment() -> dict:
        return schedule_nightly_augment(ctx)

    node: dict[str, str] = {}

    @celeryd_after_setup.connect(weak=False)
    def _node_ready(sender: str, instance: object, **_: object) -> None:
        # Runs in the main process before the pool forks: children inherit the node's name and queues.
        node["name"] = sender
        node["queues"] = ",".join(sorted(app.amqp.queues.consume_from or ()))
        for job_type, spec in JOB_TASKS.items():  # a worker that runs these jobs loads their code once, here
            if spec.queue in node["queues"].split(","):
                handler_for(job_type)

    @worker_process_init.connect(weak=False)
    def _child_init(**_: object) -> None:
        configure_logging(settings)  # each pool child logs the same way as the parent
        start_publisher(ctx.store.redis, role=node.get("queues", "worker"), node=node.get("name"))
        if settings.preload_interpreter:
            # ~10 s on 2 cores; loading in the background keeps the first prompt job from paying it.
            threading.Thread(target=lambda: ctx.interpreter, name="preload-interpreter", daemon=True).start()

    return app

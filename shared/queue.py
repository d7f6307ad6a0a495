"""What the API and the worker agree on about Celery: task names, queues and broker options.

The API imports this (never torch) to enqueue by task name; the worker builds its app on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from kombu import Exchange, Queue

from shared.celery_message import TaskSend
from shared.schemas import JobType
from shared.settings import Settings

INTERACTIVE, TRAINING, BATCH, WEBHOOKS = "interactive", "training", "batch", "webhooks"
# The reaper's and the schedule's ticks: never behind a long job, never counted as GPU work by KEDA.
MAINTENANCE = "maintenance"
QUEUES = (INTERACTIVE, TRAINING, BATCH, WEBHOOKS, MAINTENANCE)
REAP_TASK = "atelier.reap_stale_jobs"
SCHEDULE_AUGMENT_TASK = "atelier.schedule_nightly_augment"
DELIVER_WEBHOOK_TASK = "atelier.deliver_webhook"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    queue: str


JOB_TASKS: dict[JobType, TaskSpec] = {
    JobType.TRAIN: TaskSpec("atelier.train", TRAINING),
    JobType.GENERATE_IMAGES: TaskSpec("atelier.generate_images", INTERACTIVE),
    JobType.HYBRID: TaskSpec("atelier.hybrid", INTERACTIVE),
    JobType.TRAVERSE: TaskSpec("atelier.traverse", INTERACTIVE),
    JobType.DESCRIBE: TaskSpec("atelier.describe", INTERACTIVE),
    JobType.SIMILAR: TaskSpec("atelier.similar", INTERACTIVE),
    JobType.IMPORT_DATASET: TaskSpec("atelier.import_dataset", BATCH),
    JobType.AUGMENT: TaskSpec("atelier.augment", BATCH),
}


def time_limit_s(settings: Settings, queue: str) -> int:
    return {TRAINING: settings.train_time_limit_s, BATCH: settings.batch_time_limit_s}.get(
        queue, settings.interactive_time_limit_s)


def task_send(settings: Settings, job_type: JobType) -> TaskSend:
    """The message a new job of this type is queued with, its queue's time limits included (the soft
    limit raises inside the task; the hard one, a minute later, ends the pool child)."""
    spec = JOB_TASKS[job_type]
    limit = time_limit_s(settings, spec.queue)
    return TaskSend(spec.name, spec.queue, limit, limit + 60)


def make_celery(settings: Settings, name: str = "atelier") -> Celery:
    """A Celery app configured for long GPU tasks that must survive a lost worker."""
    app = Celery(name, broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # ack after the task ends, so a lost worker's task is redelivered
        task_reject_on_worker_lost=True,  # ... and a killed pool child requeues it at once
        worker_prefetch_multiplier=1,  # a long job never sits reserved behind another
        task_ignore_result=True,  # results live in the job record, not a Celery backend
        task_serializer="json", accept_content=["json"],
        task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in QUEUES],
        task_default_queue=INTERACTIVE,
        task_routes={spec.name: {"queue": spec.queue} for spec in JOB_TASKS.values()}
        | {REAP_TASK: {"queue": MAINTENANCE}, SCHEDULE_AUGMENT_TASK: {"queue": MAINTENANCE},
           DELIVER_WEBHOOK_TASK: {"queue": WEBHOOKS}},
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Longer than the longest job: a shorter one reruns tasks that are still running.
            "visibility_timeout": settings.visibility_timeout_s,
            "socket_timeout": 10, "socket_connect_timeout": 5,
        },
        broker_pool_limit=32,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        timezone="UTC",
    )
    return app

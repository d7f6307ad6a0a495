"""The Celery message the submit script pushes itself: the same envelope `send_task` writes with the
pinned celery/kombu, consumed by a real worker, and written atomically with the job record."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis

from shared.celery_message import TaskSend, queue_key, read_task, task_message
from shared.jobs import JobStore
from shared.queue import JOB_TASKS, make_celery
from shared.schemas import JobType
from shared.settings import Settings
from tests.support import Client, WorkerProcess

# Fields that differ between any two messages (fresh ids, the sending process).
PER_MESSAGE = {("headers", "id"), ("headers", "root_id"), ("headers", "origin"), ("properties", "correlation_id"),
               ("properties", "reply_to"), ("properties", "delivery_tag")}


def layout(message: dict[str, Any], path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every leaf of the envelope by its path; the body decoded; per-message ids reduced to their type."""
    out: dict[tuple[str, ...], Any] = {}
    for key, value in message.items():
        here = (*path, key)
        if isinstance(value, dict) and value:
            out |= layout(value, here)
        elif here == ("body",):
            out[here] = json.loads(base64.b64decode(value))
        else:
            out[here] = type(value).__name__ if here in PER_MESSAGE else value
    return out


@pytest.fixture
def probe_db(settings: Settings) -> tuple[Settings, redis.Redis]:
    """A Redis database of its own, so no test worker consumes what this test publishes."""
    url = settings.redis_url.rsplit("/", 1)[0] + "/12"
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    yield settings.model_copy(update={"redis_url": url}), client
    client.flushdb()


def test_the_message_is_the_one_send_task_writes(probe_db: tuple[Settings, redis.Redis]) -> None:
    settings, client = probe_db
    spec = JOB_TASKS[JobType.GENERATE_IMAGES]
    app = make_celery(settings, name="probe")
    app.send_task(spec.name, args=["job-1"], queue=spec.queue, soft_time_limit=300, time_limit=360)
    (written,) = client.lrange(queue_key(spec.queue), 0, -1)
    ours = task_message(spec.name, ["job-1"], queue=spec.queue, soft_time_limit=300, time_limit=360)
    assert layout(json.loads(ours)) == layout(json.loads(written))
    assert json.loads(ours)["headers"]["id"] != json.loads(task_message(spec.name, ["job-1"], queue=spec.queue))[
        "headers"]["id"]  # a fresh task id per message


def test_the_record_and_its_message_are_written_together(probe_db: tuple[Settings, redis.Redis]) -> None:
    settings, client = probe_db
    store = JobStore.from_url(settings.redis_url)
    spec = JOB_TASKS[JobType.TRAIN]
    job, created = store.create(JobType.TRAIN, {"family": "cvae"}, owner="probe",
                                send=TaskSend(spec.name, spec.queue, 100, 160))
    assert created
    (raw,) = client.lrange(queue_key(spec.queue), 0, -1)
    assert json.loads(raw)["headers"]["timelimit"] == [160, 100]
    assert read_task(raw) == (spec.name, [job.id])
    assert store.unsent_older_than(-60) == []  # nothing for the reaper to resend
    again, created = store.create(JobType.TRAIN, {"family": "cvae"}, owner="probe", idempotency_key="k",
                                  send=TaskSend(spec.name, spec.queue))
    replay, replayed_created = store.create(JobType.TRAIN, {"family": "cvae"}, owner="probe",
                                            idempotency_key="k", send=TaskSend(spec.name, spec.queue))
    assert created and not replayed_created and replay.id == again.id
    assert client.llen(queue_key(spec.queue)) == 2  # a replayed submit pushes no second message
    # without `send` (the nightly schedule's path) the job is unsent until its sender confirms
    unsent, _ = store.create(JobType.TRAIN, {"family": "cvae"}, owner="probe")
    assert store.unsent_older_than(-60) == [unsent.id] and client.llen(queue_key(spec.queue)) == 2


@pytest.mark.e2e
def test_a_real_worker_runs_a_job_submitted_this_way(client: Client, worker: WorkerProcess, trained_model: str,
                                                     store: JobStore) -> None:
    job = client.submit("generate_images", {"model": trained_model, "conditions": {"class": "Dress"}, "n": 2})
    assert job["id"] not in store.unsent_older_than(-60)
    done = client.wait(job["id"])
    assert done["status"] == "succeeded", (done, worker.tail())
    assert done["attempts"] == 1 and len(done["output"]["images"]) == 2


def test_the_batcher_reads_job_ids_off_the_queue_oldest_first(probe_db: tuple[Settings, redis.Redis]) -> None:
    """worker/batching.py peeks at a job type's queue (here the interactive one): its ids, oldest first; other
    tasks and messages it did not write are left alone."""
    from types import SimpleNamespace

    from worker.batching import queued_ids

    settings, client = probe_db
    store = JobStore.from_url(settings.redis_url)
    generate, describe = JOB_TASKS[JobType.GENERATE_IMAGES], JOB_TASKS[JobType.DESCRIBE]
    first, _ = store.create(JobType.GENERATE_IMAGES, {"n": 1}, owner="probe",
                            send=TaskSend(generate.name, generate.queue))
    described, _ = store.create(JobType.DESCRIBE, {"n": 1}, owner="probe",
                                send=TaskSend(describe.name, describe.queue))
    client.lpush(queue_key(generate.queue), "not json", json.dumps({"headers": {"task": generate.name}, "body": "!"}))
    second, _ = store.create(JobType.GENERATE_IMAGES, {"n": 2}, owner="probe",
                             send=TaskSend(generate.name, generate.queue))
    ctx = SimpleNamespace(store=store)
    assert queued_ids(ctx, JobType.GENERATE_IMAGES) == [first.id, second.id]  # type: ignore[arg-type]
    assert queued_ids(ctx, JobType.DESCRIBE) == [described.id]  # type: ignore[arg-type]

"""The job record's state machine against a real Valkey: forward-only, token-guarded transitions."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

import worker.reaper
from shared.celery_message import queue_key, task_message
from shared.errors import Conflict, RateLimited
from shared.jobs import JobStore
from shared.queue import task_send
from shared.schemas import JobStatus, JobType
from shared.settings import Settings
from worker.reaper import LOST_CHECK_KEY, reap_stale_jobs


def new(store: JobStore, owner: str = "store-tests", **kwargs: object):
    job, created = store.create(JobType.TRAIN, {"family": "cvae"}, owner=owner, **kwargs)
    assert created
    return job


def claim(store: JobStore, job_id: str, lease_s: float = 30, max_attempts: int = 3):
    token = uuid.uuid4().hex
    return token, store.claim(job_id, token, lease_s=lease_s, max_attempts=max_attempts)


def test_happy_path(store: JobStore) -> None:
    job = new(store)
    assert job.status == JobStatus.QUEUED and job.progress.fraction == 0
    token, result = claim(store, job.id)
    assert result.state == "claimed" and result.attempts == 1
    assert store.set_progress(job.id, token, 0.5, "halfway")
    running = store.get(job.id)
    assert running.status == JobStatus.RUNNING and running.started_at and running.progress.message == "halfway"
    assert store.finish(job.id, token, JobStatus.SUCCEEDED, output={"ok": 1})
    done = store.get(job.id)
    assert done.status == JobStatus.SUCCEEDED and done.output == {"ok": 1} and done.finished_at
    assert done.progress.fraction == 1.0
    assert store.redis.ttl(store.key(job.id)) > 0  # finished records expire


def test_finished_jobs_never_move_back(store: JobStore) -> None:
    job = new(store)
    token, _ = claim(store, job.id)
    assert store.finish(job.id, token, JobStatus.FAILED, error={"code": "x", "message": "y"})
    assert not store.finish(job.id, token, JobStatus.SUCCEEDED)  # a duplicate worker's late success
    assert not store.set_progress(job.id, token, 0.9, "late")
    assert claim(store, job.id)[1].state == "terminal"  # a redelivery of a finished job does nothing
    assert store.cancel(job.id) == ("finished", JobStatus.FAILED)
    final = store.get(job.id)
    assert final.status == JobStatus.FAILED and final.error.code == "x"


def test_only_the_owner_token_may_finish(store: JobStore) -> None:
    job = new(store)
    claim(store, job.id)
    assert not store.finish(job.id, "not-the-token", JobStatus.SUCCEEDED)
    assert store.heartbeat(job.id, "not-the-token", lease_s=10) == -1
    assert store.get(job.id).status == JobStatus.RUNNING


def test_a_second_claim_waits_for_the_lease(store: JobStore) -> None:
    job = new(store)
    claim(store, job.id, lease_s=30)
    _, second = claim(store, job.id)
    assert second.state == "busy" and 25 < second.retry_in_s <= 30


def test_expired_lease_is_taken_over_then_gives_up_as_worker_lost(store: JobStore) -> None:
    job = new(store)
    first, result = claim(store, job.id, lease_s=0.2, max_attempts=2)
    assert result.attempts == 1
    time.sleep(0.3)
    second, result = claim(store, job.id, lease_s=0.2, max_attempts=2)
    assert result.state == "claimed" and result.attempts == 2
    assert not store.finish(job.id, first, JobStatus.SUCCEEDED)  # the lost worker's result is refused
    time.sleep(0.3)
    assert job.id in store.stale_running()
    _, result = claim(store, job.id, lease_s=0.2, max_attempts=2)
    assert result.state == "lost"
    final = store.get(job.id)
    assert final.status == JobStatus.FAILED and final.error.code == "worker_lost"
    assert job.id not in store.stale_running()


def test_heartbeat_renews_the_lease_and_reports_cancel(store: JobStore) -> None:
    job = new(store)
    token, _ = claim(store, job.id, lease_s=0.3)
    time.sleep(0.2)
    assert store.heartbeat(job.id, token, lease_s=30) == 0
    time.sleep(0.2)
    assert claim(store, job.id)[1].state == "busy"  # still ours thanks to the heartbeat
    assert store.cancel(job.id) == ("requested", None)
    assert store.get(job.id).cancel_requested
    assert store.heartbeat(job.id, token, lease_s=30) == 1
    assert store.finish(job.id, token, JobStatus.CANCELED)
    assert store.cancel(job.id) == ("finished", JobStatus.CANCELED)


def test_cancel_queued_is_immediate_and_never_runs(store: JobStore) -> None:
    job = new(store)
    assert store.cancel(job.id) == ("canceled", None)
    canceled = store.get(job.id)
    assert canceled.status == JobStatus.CANCELED and canceled.finished_at
    assert claim(store, job.id)[1].state == "terminal"
    assert store.cancel("nope") == ("missing", None)


def test_fail_queued(store: JobStore) -> None:
    job = new(store)
    assert store.fail_queued(job.id, "enqueue_failed", "try again")
    assert store.get(job.id).error.code == "enqueue_failed"
    assert not store.fail_queued(job.id, "enqueue_failed", "twice")


def test_idempotency_key_returns_the_first_job(store: JobStore) -> None:
    first, created = store.create(JobType.TRAIN, {"a": 1}, owner="idem", idempotency_key="k-1")
    again, created_again = store.create(JobType.TRAIN, {"a": 1}, owner="idem", idempotency_key="k-1")
    assert created and not created_again and again.id == first.id
    other_owner, created_other = store.create(JobType.TRAIN, {"a": 1}, owner="idem-2", idempotency_key="k-1")
    assert created_other and other_owner.id != first.id  # keys are per caller
    with pytest.raises(Conflict):
        store.create(JobType.TRAIN, {"a": 2}, owner="idem", idempotency_key="k-1")


def test_an_idempotency_key_whose_job_never_reached_the_queue_creates_a_new_one(store: JobStore) -> None:
    """After a 503 enqueue_failed the advised retry, same key and request, must run, not replay the
    failure; a job that ran and failed is replayed as before, and another request is still a Conflict."""
    owner = f"idem-{uuid.uuid4().hex[:6]}"
    first, _ = store.create(JobType.TRAIN, {"a": 1}, owner=owner, idempotency_key="k-enq")
    assert store.fail_queued(first.id, "enqueue_failed", "the job could not be queued")
    retry, created = store.create(JobType.TRAIN, {"a": 1}, owner=owner, idempotency_key="k-enq")
    assert created and retry.id != first.id and retry.status == JobStatus.QUEUED
    again, created_again = store.create(JobType.TRAIN, {"a": 1}, owner=owner, idempotency_key="k-enq")
    assert not created_again and again.id == retry.id
    with pytest.raises(Conflict):
        store.create(JobType.TRAIN, {"a": 2}, owner=owner, idempotency_key="k-enq")
    ran, _ = store.create(JobType.TRAIN, {"b": 1}, owner=owner, idempotency_key="k-ran")
    token = claim(store, ran.id)[0]
    assert store.finish(ran.id, token, JobStatus.FAILED, error={"code": "training_failed", "message": "x"})
    replay, created_replay = store.create(JobType.TRAIN, {"b": 1}, owner=owner, idempotency_key="k-ran")
    assert not created_replay and replay.id == ran.id


def test_list_is_newest_first_with_cursor_and_filters(store: JobStore) -> None:
    owner = f"lister-{uuid.uuid4().hex[:6]}"
    ids = []
    for i in range(7):
        job, _ = store.create(JobType.TRAIN if i % 2 else JobType.GENERATE_IMAGES, {"i": i}, owner=owner)
        ids.append(job.id)
        time.sleep(0.002)
    assert store.cancel(ids[0]) == ("canceled", None)
    page, cursor = store.list(owner=owner, limit=3)
    assert [j.id for j in page] == ids[::-1][:3] and cursor
    rest, end = store.list(owner=owner, limit=10, cursor=cursor)
    assert [j.id for j in rest] == ids[::-1][3:] and end is None
    trains, _ = store.list(owner=owner, job_type=JobType.TRAIN, limit=10)
    assert [j.id for j in trains] == [ids[5], ids[3], ids[1]]
    canceled, _ = store.list(owner=owner, status=JobStatus.CANCELED, limit=10)
    assert [j.id for j in canceled] == [ids[0]]


def test_model_version_is_allocated_once_per_job(store: JobStore) -> None:
    job = new(store)
    ref = store.model_version_for(job.id, "testfam")
    assert ref.startswith("testfam@v")
    assert store.model_version_for(job.id, "testfam") == ref
    assert store.model_version_for(new(store).id, "testfam") != ref


def test_wait_until_terminal_returns_when_the_job_ends(store: JobStore) -> None:
    import threading

    job = new(store)
    token, _ = claim(store, job.id)
    threading.Timer(0.3, lambda: store.finish(job.id, token, JobStatus.SUCCEEDED)).start()
    started = time.monotonic()
    done = store.wait_until_terminal(job.id, 5)
    assert done.status == JobStatus.SUCCEEDED and time.monotonic() - started < 3
    waiting = new(store)
    started = time.monotonic()
    assert store.wait_until_terminal(waiting.id, 0.5).status == JobStatus.QUEUED
    assert 0.4 < time.monotonic() - started < 2


class ReaperRun:
    """Reaper ticks against a Redis database of their own, so the reaper touches no other test's jobs or
    webhook events; the Celery app records what it sends and pushes the message, as Celery does."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.sent: list[str] = []
        self.settings = SimpleNamespace(job_lease_s=20.0, lost_message_after_s=0.5)
        self.ctx = SimpleNamespace(store=store, settings=self.settings,
                                   registry=SimpleNamespace(is_empty=lambda: False))
        self.app = SimpleNamespace(send_task=self._send_task)

    def _send_task(self, name: str, args: list, queue: str, **_: object) -> None:
        self.sent.append(args[0])
        self.store.redis.lpush(queue_key(queue), task_message(name, args, queue=queue))

    def tick(self) -> None:
        self.store.redis.delete(LOST_CHECK_KEY)  # every tick looks for lost messages, not once a period
        reap_stale_jobs(self.ctx, self.app)  # type: ignore[arg-type]


@pytest.fixture
def reaper(settings: Settings) -> Iterator[ReaperRun]:
    store = JobStore.from_url(settings.redis_url.rsplit("/", 1)[0] + "/13")
    store.redis.flushdb()
    yield ReaperRun(store)
    store.redis.flushdb()


def test_the_reaper_sends_one_recovery_message_until_a_worker_claims_the_job(reaper: ReaperRun) -> None:
    """Finding 13: a stale job in a backed-up queue is re-sent once, not every lease period; once a
    worker has claimed it (and lost it again), the reaper may send a new copy."""
    store = reaper.store
    reaper.settings.job_lease_s = 0.2
    job = new(store, owner=f"reaper-{uuid.uuid4().hex[:6]}")
    store.mark_enqueued(job.id)
    assert claim(store, job.id, lease_s=0.2)[1].state == "claimed"
    time.sleep(0.5)  # the worker died: its lease ran out
    for _ in range(3):  # every reaper tick while the copy waits in a long queue
        reaper.tick()
    assert reaper.sent.count(job.id) == 1
    assert claim(store, job.id, lease_s=0.2)[1].state == "claimed"  # a worker took the copy ...
    store.claimed_after_requeue(job.id)
    time.sleep(0.5)  # ... and died too
    reaper.tick()
    assert reaper.sent.count(job.id) == 2


def test_the_reaper_resends_a_queued_job_whose_message_was_lost(reaper: ReaperRun, settings: Settings) -> None:
    """A message taken off the queue by a worker whose connection dropped before kombu recorded it as
    unacked is gone: its job would stay queued for ever. Jobs queued longer than the setting whose
    message is in no queue get one new message; jobs whose message waits, or that are young, do not."""
    store = reaper.store
    send = task_send(settings, JobType.GENERATE_IMAGES)
    waiting, _ = store.create(JobType.GENERATE_IMAGES, {"n": 1}, owner="lost", send=send)
    lost, _ = store.create(JobType.GENERATE_IMAGES, {"n": 2}, owner="lost", send=send)
    done, _ = store.create(JobType.GENERATE_IMAGES, {"n": 3}, owner="lost", send=send)
    token, _ = claim(store, done.id)
    store.finish(done.id, token, JobStatus.SUCCEEDED, output={})
    queue = queue_key(send.queue)
    store.redis.lrem(queue, 1, store.redis.lrange(queue, 1, 1)[0])  # the second message (lost's) vanishes
    store.redis.lrem(queue, 1, store.redis.lrange(queue, 0, 0)[0])  # done's was consumed
    reaper.tick()
    assert reaper.sent == []  # too young to call lost
    time.sleep(0.6)
    young, _ = store.create(JobType.GENERATE_IMAGES, {"n": 4}, owner="lost")  # unsent and young: not this path
    reaper.tick()
    assert reaper.sent == [lost.id]
    assert set(store.queued_older_than(0)) == {waiting.id, lost.id, young.id}  # done left the set
    for _ in range(2):  # the new message waits to be taken: no more copies
        reaper.tick()
    assert reaper.sent == [lost.id]
    claim(store, lost.id)
    assert lost.id not in store.queued_older_than(0)


def test_a_job_taken_while_the_queue_was_read_gets_no_second_message(reaper: ReaperRun,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan reads the queue from its head while workers pop its tail: a job whose message left the
    list after the scan began looks lost. Its status, read after the scan, says a worker has it."""
    store = reaper.store
    job, _ = store.create(JobType.GENERATE_IMAGES, {"n": 1}, owner="lost")
    store.mark_enqueued(job.id)
    claim(store, job.id)  # a worker took it after the scan had passed its message
    monkeypatch.setattr(worker.reaper, "queued_without_a_message", lambda _store, _age: [job.id])
    reaper.tick()
    assert reaper.sent == []


def test_records_expire_and_the_indexes_forget_them(settings: Settings) -> None:
    """Finding 12: a record has a TTL from creation (a job whose message is lost does not stay for
    ever); expired jobs leave the all-jobs index (reaper) and stop counting against max_queued."""
    store = JobStore.from_url(settings.redis_url.rsplit("/", 1)[0] + "/14", ttl_s=3600)
    store.redis.flushdb()
    owner = "ttl-owner"
    first, _ = store.create(JobType.TRAIN, {"a": 1}, owner=owner, max_queued=2)
    second, _ = store.create(JobType.TRAIN, {"a": 2}, owner=owner, max_queued=2)
    assert 0 < store.redis.ttl(store.key(first.id)) <= 3600
    with pytest.raises(RateLimited):
        store.create(JobType.TRAIN, {"a": 3}, owner=owner, max_queued=2)
    store.redis.delete(store.key(first.id))  # its record expired while it sat queued
    third, created = store.create(JobType.TRAIN, {"a": 3}, owner=owner, max_queued=2)
    assert created and store.redis.sismember(store.queued_set(owner), third.id)
    assert not store.redis.sismember(store.queued_set(owner), first.id)
    assert store.prune_index() == 1
    assert store.redis.zrangebylex(store.ALL_INDEX, "-", "+") == sorted([second.id, third.id])
    store.redis.flushdb()

"""Batching across jobs: a worker about to run a model for one `generate_images`, `describe` or
`similar` job takes the other queued jobs of that type for the same model version with it, and
serves them all with one forward pass.

The queue's messages stay where they are. The job store's claim decides who runs a job, as it
does for a redelivered message: a job taken into a batch is claimed here with its own token, its
lease is kept alive by its own heartbeat, and it ends through the same `execute` as any job. When
its message reaches a worker later, the claim finds it finished (or still leased) and nothing runs
twice. A worker lost mid-batch leaves leases that expire, and the reaper re-enqueues each job.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from celery.exceptions import SoftTimeLimitExceeded

from shared.celery_message import queue_key, read_task
from shared.queue import JOB_TASKS
from shared.schemas import Job, JobStatus, JobType
from worker.context import WorkerContext
from worker.runner import JobSession, execute

log = logging.getLogger(__name__)
PEEK = 200  # messages looked at, oldest first
R = TypeVar("R")


@dataclass
class Companion:
    job: Job
    session: JobSession


class Batched(Protocol):
    """A job's share of a shared pass: its job, and the pass it was in once the pass has run."""

    job: Job
    batch: dict[str, Any] | None


def queued_ids(ctx: WorkerContext, job_type: JobType) -> list[str]:
    """Job ids of the oldest messages of one job type waiting in its queue (kombu pushes on the
    left and pops on the right, so the oldest are at the right end)."""
    spec = JOB_TASKS[job_type]
    tasks = (read_task(raw) for raw in reversed(ctx.store.redis.lrange(queue_key(spec.queue), -PEEK, -1)))
    return list(dict.fromkeys(task[1][0] for task in tasks if task and task[0] == spec.name and task[1]))


@contextmanager
def companions(ctx: WorkerContext, leader: Job, fits: Callable[[Job], int | None], room: int
               ) -> Iterator[list[Companion]]:
    """Claim queued jobs of the leader's type that `fits` (it returns how many rows a job adds to the
    pass, or None when it cannot join), up to `room` rows in all; within `ATELIER_BATCH_WINDOW_MS` of
    looking first, look again for jobs that arrived meanwhile. Their heartbeats run until the block ends."""
    settings, store = ctx.settings, ctx.store
    taken: list[Companion] = []
    seen = {leader.id}  # looked at once: a job that cannot join now will not within the window either
    with ExitStack() as stack:
        deadline = time.monotonic() + settings.batch_window_ms / 1000
        while room > 0:
            for job_id in queued_ids(ctx, leader.type):
                if job_id in seen:
                    continue
                seen.add(job_id)
                job = store.get(job_id)
                size = fits(job) if job is not None and job.status == JobStatus.QUEUED else None
                if size is None or size > room:
                    continue
                token = uuid.uuid4().hex
                claim = store.claim(job_id, token, lease_s=settings.job_lease_s, max_attempts=settings.job_max_attempts)
                if claim.state != "claimed":  # another worker took it first
                    continue
                store.claimed_after_requeue(job_id)
                session = stack.enter_context(JobSession(store, job_id, token, lease_s=settings.job_lease_s,
                                                         heartbeat_s=settings.heartbeat_s))
                taken.append(Companion(store.get(job_id) or job, session))
                room -= size
                if room <= 0:
                    break
            wait = deadline - time.monotonic()
            if wait <= 0 or room <= 0:
                break
            time.sleep(min(wait, 0.005))
        if taken:
            log.info("job %s samples with %d queued jobs for %s: %s", leader.id, len(taken), leader.model,
                     ", ".join(c.job.id for c in taken))
        yield taken


def run_together(shares: Sequence[Batched], run: Callable[[], Sequence[R]], batch: dict[str, Any]
                 ) -> list[R | None]:
    """One pass for every job's share (`run`), each share's `batch` set to `batch`. When the pass
    fails, every result is None: each job then runs alone, and fails, or not, on its own. A single
    share needs no shared pass (None: it runs alone). A soft time limit belongs to the leader's
    task: it propagates, and the companions' leases expire and the reaper re-runs them."""
    if len(shares) == 1:
        return [None]
    try:
        results: list[R | None] = list(run())
    except SoftTimeLimitExceeded:
        raise
    except Exception:
        log.exception("a pass shared by %d jobs, led by %s, failed; running each alone", len(shares),
                      shares[0].job.id)
        return [None] * len(shares)
    for share in shares:
        share.batch = batch
    return results


def finish_companions(ctx: WorkerContext, joined: Sequence[tuple[Companion, Any]], results: Sequence[Any],
                      outputs: Callable[..., dict]) -> None:
    """Each companion's outputs from its share and its result of the shared pass (None when the pass
    failed: `outputs` then runs its model alone), `outputs(ctx, share, result, progress, should_stop)`
    ended as the companion's own job, so that its failure is its own."""
    for (companion, share), result in zip(joined, results, strict=True):
        execute(ctx, companion.job, companion.session,
                lambda c, _job, progress, stop, s=share, r=result: outputs(c, s, r, progress, stop))

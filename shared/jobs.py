"""The job record and its store in Redis.

Every status change is one Lua script, so it is atomic and only moves forward:
queued -> running -> succeeded | failed | canceled. A worker owns a running job through a random
token and a lease it renews by heartbeat; a late or duplicate worker (old token) can neither report
progress nor finish the job. A redelivered task may take over a running job only once its lease has
expired, and after `max_attempts` takeovers the job fails with `worker_lost`.
All times come from the Redis server clock, so workers on several machines agree on leases.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from shared.celery_message import TaskSend, queue_key, task_message
from shared.errors import Conflict, RateLimited
from shared.image_urls import with_image_urls
from shared.schemas import TERMINAL_STATUSES, Job, JobStatus, JobType

PREFIX = "atelier:"
JSON_FIELDS = ("input", "output", "error", "progress")

# Shared Lua helpers, prepended to every script.
_LUA_PRELUDE = """
local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
-- Job counts by type and status for /metrics: queued and running are current, the rest cumulative.
local function count(key, from, to)
  local jt = redis.call('HGET', key, 'type')
  if from then redis.call('HINCRBY', 'atelier:stats:jobs', jt .. '|' .. from, -1) end
  redis.call('HINCRBY', 'atelier:stats:jobs', jt .. '|' .. to, 1)
end
-- Leaving `queued` frees a place in the owner's queued-jobs limit (and ends the wait the reaper watches).
local function dequeued(key, job_id)
  local owner = redis.call('HGET', key, 'owner')
  if owner then redis.call('SREM', 'atelier:jobs:queued:' .. owner, job_id) end
  redis.call('ZREM', 'atelier:jobs:queued-since', job_id)
end
-- The webhook outbox: an event the job's webhook asked for, delivered by a Celery task.
local function notify(key, job_id, event)
  local events = redis.call('HGET', key, 'webhook_events')
  if events and string.find(',' .. events .. ',', ',' .. event .. ',', 1, true) then
    redis.call('ZADD', 'atelier:webhooks:outbox', now_s(), job_id .. '|' .. event)
  end
end
local DURATION_BUCKETS = {0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600}
local function observe_duration(key, status, now)
  local started = tonumber(redis.call('HGET', key, 'started_at') or '')
  if not started then return end
  local seconds = now - started
  local hk = 'atelier:stats:duration:' .. redis.call('HGET', key, 'type') .. '|' .. status
  for _, b in ipairs(DURATION_BUCKETS) do
    if seconds <= b then redis.call('HINCRBY', hk, tostring(b), 1) end
  end
  redis.call('HINCRBY', hk, 'count', 1)
  redis.call('HINCRBYFLOAT', hk, 'sum', seconds)
  redis.call('SADD', 'atelier:stats:duration-index', hk)  -- /metrics reads this set, never a SCAN
end
local function finish(key, running_set, job_id, status, ttl, fields)
  local now = now_s()
  count(key, redis.call('HGET', key, 'status'), status)
  dequeued(key, job_id)
  observe_duration(key, status, now)
  redis.call('HSET', key, 'status', status, 'finished_at', string.format('%.6f', now))
  if fields and #fields > 0 then redis.call('HSET', key, unpack(fields)) end
  redis.call('HDEL', key, 'token', 'lease_until')
  redis.call('SREM', running_set, job_id)
  redis.call('EXPIRE', key, ttl)
  redis.call('PUBLISH', 'atelier:events:' .. job_id, status)
  notify(key, job_id, status)
end
local function is_terminal(st)
  return st == 'succeeded' or st == 'failed' or st == 'canceled'
end
"""

ENQUEUE_FAILED = "enqueue_failed"  # the error of a job whose message never reached the queue

# KEYS: job, index_all, index_owner, unsent, idem ('' when none), owner's queued set,
#       the queue's Redis list ('' when the caller sends the message itself)
# ARGV: job_id, idem_ttl, request_hash, max_queued (0: no limit), record ttl, task message ('' when
#       none), field, value, ...
_CREATE = """
if KEYS[5] ~= '' then
  local existing = redis.call('GET', KEYS[5])
  if existing then return {'existing', existing} end
end
local limit = tonumber(ARGV[4])
if limit > 0 then
  local queued = redis.call('SCARD', KEYS[6])
  if queued >= limit then return {'limited', tostring(queued)} end
end
local now = now_s()
redis.call('HSET', KEYS[1], 'created_at', string.format('%.6f', now), unpack(ARGV, 7))
-- a record expires even if it is never run (its message lost); finishing sets the TTL again
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
count(KEYS[1], nil, 'queued')
redis.call('SADD', KEYS[6], ARGV[1])
redis.call('ZADD', 'atelier:jobs:queued-since', now, ARGV[1])  -- the reaper finds lost messages by age
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
if KEYS[7] ~= '' then
  -- the Celery message, in the same atomic step as the record: nothing for the reaper to resend
  redis.call('LPUSH', KEYS[7], ARGV[6])
else
  redis.call('ZADD', KEYS[4], now, ARGV[1])  -- unsent until the caller confirms its own send
end
if KEYS[5] ~= '' then
  redis.call('SET', KEYS[5], ARGV[1] .. '|' .. ARGV[3], 'EX', tonumber(ARGV[2]))
end
return {'new', string.format('%.6f', now)}
"""

# KEYS: job, running_set   ARGV: job_id, token, lease_ms, max_attempts, ttl
_CLAIM = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'missing', 0} end
if is_terminal(st) then return {'terminal', 0} end
local now = now_s()
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if st == 'running' then
  local lease = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
  if lease > now then return {'busy', tostring(lease - now)} end
  if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
    finish(KEYS[1], KEYS[2], ARGV[1], 'canceled', ARGV[5], {})
    return {'terminal', 0}
  end
  if attempts >= tonumber(ARGV[4]) then
    local err = cjson.encode({code='worker_lost', message='the worker running this job was lost ' ..
      attempts .. ' times; giving up'})
    finish(KEYS[1], KEYS[2], ARGV[1], 'failed', ARGV[5], {'error', err})
    return {'lost', attempts}
  end
end
attempts = attempts + 1
if st == 'queued' then
  count(KEYS[1], 'queued', 'running')
  dequeued(KEYS[1], ARGV[1])
  notify(KEYS[1], ARGV[1], 'running')
end
redis.call('HSET', KEYS[1], 'status', 'running', 'token', ARGV[2], 'attempts', attempts,
  'lease_until', string.format('%.6f', now + tonumber(ARGV[3]) / 1000))
if not redis.call('HGET', KEYS[1], 'started_at') then
  redis.call('HSET', KEYS[1], 'started_at', string.format('%.6f', now))
end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('ZREM', 'atelier:jobs:unsent', ARGV[1])
redis.call('PUBLISH', 'atelier:events:' .. ARGV[1], 'running')
return {'claimed', attempts}
"""

# KEYS: job  ARGV: token, lease_ms   -> 1 cancel requested, 0 carry on, -1 no longer ours
_HEARTBEAT = """
local st, tok, cancel = unpack(redis.call('HMGET', KEYS[1], 'status', 'token', 'cancel_requested'))
if st ~= 'running' or tok ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[1], 'lease_until', string.format('%.6f', now_s() + tonumber(ARGV[2]) / 1000))
if cancel == '1' then return 1 end
return 0
"""

# KEYS: job  ARGV: job_id, token, progress_json
_PROGRESS = """
local st, tok = unpack(redis.call('HMGET', KEYS[1], 'status', 'token'))
if st ~= 'running' or tok ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[3])
redis.call('PUBLISH', 'atelier:events:' .. ARGV[1], 'progress')
return 1
"""

# KEYS: job, running_set  ARGV: job_id, token, status, ttl, field, value, ...
_FINISH = """
local st, tok = unpack(redis.call('HMGET', KEYS[1], 'status', 'token'))
if st ~= 'running' or tok ~= ARGV[2] then return 0 end
finish(KEYS[1], KEYS[2], ARGV[1], ARGV[3], ARGV[4], {unpack(ARGV, 5)})
return 1
"""

# KEYS: job, running_set  ARGV: job_id, ttl
_CANCEL = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'missing' end
if st == 'queued' then
  finish(KEYS[1], KEYS[2], ARGV[1], 'canceled', ARGV[2],
    {'progress', cjson.encode({fraction=0, message='canceled before it started'})})
  redis.call('ZREM', 'atelier:jobs:unsent', ARGV[1])
  return 'canceled'
end
if st == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  redis.call('PUBLISH', 'atelier:events:' .. ARGV[1], 'cancel_requested')
  return 'requested'
end
return 'finished:' .. st
"""

# KEYS: job, running_set  ARGV: job_id, ttl, error_json   (a queued job that cannot run)
_FAIL_QUEUED = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
finish(KEYS[1], KEYS[2], ARGV[1], 'failed', ARGV[2], {'error', ARGV[3]})
redis.call('ZREM', 'atelier:jobs:unsent', ARGV[1])
return 1
"""

# KEYS: job  ARGV: delivery_json, max_kept   (a webhook delivery attempt, appended to the job's list)
_RECORD_DELIVERY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local raw = redis.call('HGET', KEYS[1], 'webhook_deliveries')
local list = raw and cjson.decode(raw) or {}
table.insert(list, cjson.decode(ARGV[1]))
while #list > tonumber(ARGV[2]) do table.remove(list, 1) end
redis.call('HSET', KEYS[1], 'webhook_deliveries', cjson.encode(list))
return #list
"""

# KEYS: job, seq  ARGV: family   -> the model version this training job produces (stable on rerun)
_MODEL_VERSION = """
local existing = redis.call('HGET', KEYS[1], 'model')
if existing then return existing end
local n = redis.call('INCR', KEYS[2])
local ref = ARGV[1] .. '@v' .. n
redis.call('HSET', KEYS[1], 'model', ref)
return ref
"""


_QUEUED_PROGRESS = {"fraction": 0.0, "message": "queued"}  # a new job's progress
_QUEUED_PROGRESS_JSON = json.dumps(_QUEUED_PROGRESS)
TERMINAL_EVENTS = ("succeeded", "failed", "canceled")  # what a webhook hears unless it asks otherwise
DEFAULT_OWNER = "public"  # who owns jobs while no API keys are configured (and the nightly schedule's jobs)


def new_job_id() -> str:
    """Time-ordered id (ms timestamp + randomness), so lexicographic order is creation order."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


def request_fingerprint(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Claim:
    state: Literal["claimed", "busy", "terminal", "lost", "missing"]
    attempts: int = 0
    retry_in_s: float = 0.0


def collect_keys(value: Any) -> list[str]:
    """Every object key in a job output, in the order they appear."""
    if isinstance(value, dict):
        own = [value["key"]] if isinstance(value.get("key"), str) else []
        return own + [k for v in value.values() for k in collect_keys(v)]
    if isinstance(value, list):
        return [k for v in value for k in collect_keys(v)]
    return []


def with_presigned_urls(value: Any, sign: Any) -> Any:
    """A copy of a job output where every object `key` comes with a presigned `url` beside it."""
    if isinstance(value, dict):
        out = {k: with_presigned_urls(v, sign) for k, v in value.items()}
        if isinstance(value.get("key"), str):
            out["url"] = sign(value["key"])
        return out
    if isinstance(value, list):
        return [with_presigned_urls(v, sign) for v in value]
    return value


def public_view(job: Job, sign: Callable[[str], str], exclude: set[str] | None = None,
                image_url: Callable[[str, int], str] | None = None) -> dict[str, Any]:
    """The job as users see it (API answers, webhook payloads): every stored object key in the
    output gets a presigned URL beside it, and every image kept in the job's images archive its own
    signed URL (`image_url(job_id, index)`, see shared/image_urls.py)."""
    data = job.model_dump(mode="json", exclude=exclude)
    if data.get("output"):
        data["output"] = with_presigned_urls(data["output"], sign)
        if image_url is not None:
            with_image_urls(job.id, data["output"], image_url)
    return data


def _ts(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), tz=UTC) if value else None


def job_from_hash(data: dict[str, str]) -> Job:
    decoded: dict[str, Any] = {k: json.loads(data[k]) if k in JSON_FIELDS and data.get(k) else None
                               for k in JSON_FIELDS}
    return Job(
        id=data["id"],
        type=JobType(data["type"]),
        status=JobStatus(data["status"]),
        input=decoded["input"] or {},
        progress=decoded["progress"] or {"fraction": 0.0, "message": ""},
        created_at=_ts(data.get("created_at")),
        started_at=_ts(data.get("started_at")),
        finished_at=_ts(data.get("finished_at")),
        output=decoded["output"],
        error=decoded["error"],
        model=data.get("model") or None,
        owner=data.get("owner", ""),
        attempts=int(data.get("attempts") or 0),
        cancel_requested=data.get("cancel_requested") == "1",
        webhook=data.get("webhook") or None,
        webhook_events=data["webhook_events"].split(",") if data.get("webhook_events") else None,
        webhook_deliveries=json.loads(data["webhook_deliveries"]) if data.get("webhook_deliveries") else [],
    )


class JobStore:
    """Job records in Redis. Safe to share between threads; one per process."""

    def __init__(self, client: redis.Redis, *, ttl_s: int = 30 * 86400, idempotency_ttl_s: int = 86400) -> None:
        self.redis = client
        self.ttl_s = ttl_s
        self.idempotency_ttl_s = idempotency_ttl_s
        reg = client.register_script
        self._create = reg(_LUA_PRELUDE + _CREATE)
        self._claim = reg(_LUA_PRELUDE + _CLAIM)
        self._heartbeat = reg(_LUA_PRELUDE + _HEARTBEAT)
        self._progress = reg(_LUA_PRELUDE + _PROGRESS)
        self._finish = reg(_LUA_PRELUDE + _FINISH)
        self._cancel = reg(_LUA_PRELUDE + _CANCEL)
        self._fail_queued = reg(_LUA_PRELUDE + _FAIL_QUEUED)
        self._model_version = reg(_MODEL_VERSION)
        self._record_delivery = reg(_RECORD_DELIVERY)
        # delete a key only if it still holds the value read (an idempotency key released once)
        self._release = reg("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
                            "return 0")

    @classmethod
    def from_url(cls, url: str, *, retry_s: float = 3.0, **kwargs: Any) -> JobStore:
        """`retry_s`: how long each call rides out a Redis that refuses connections (a restart) before it
        raises. Workers wait a minute: a task that raised before claiming its job would be acked and the
        job left queued with no message. The API waits seconds, then answers 503."""
        retries = max(1, int(retry_s / 2) + 3)  # backoff 0.1 s doubling to a 2 s cap
        client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10, socket_connect_timeout=5,
                                      health_check_interval=30,
                                      retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries),
                                      retry_on_error=[redis.ConnectionError, redis.TimeoutError])
        return cls(client, **kwargs)

    # --- keys ---------------------------------------------------------------------------------
    @staticmethod
    def key(job_id: str) -> str:
        return f"{PREFIX}job:{job_id}"

    @staticmethod
    def owner_index(owner: str) -> str:
        return f"{PREFIX}jobs:owner:{owner}"

    @staticmethod
    def queued_set(owner: str) -> str:
        return f"{PREFIX}jobs:queued:{owner}"

    ALL_INDEX = f"{PREFIX}jobs:all"
    RUNNING = f"{PREFIX}jobs:running"
    UNSENT = f"{PREFIX}jobs:unsent"
    QUEUED_SINCE = f"{PREFIX}jobs:queued-since"  # every queued job, scored by when it was created

    @staticmethod
    def events_channel(job_id: str) -> str:
        return f"{PREFIX}events:{job_id}"

    # --- API side -----------------------------------------------------------------------------
    def create(self, job_type: JobType, job_input: dict, *, owner: str, webhook: str | None = None,
               webhook_events: Iterable[str] = TERMINAL_EVENTS, idempotency_key: str | None = None,
               model: str | None = None, fingerprint: str | None = None,
               max_queued: int = 0, retry_after_s: int = 30, send: TaskSend | None = None) -> tuple[Job, bool]:
        """Create a queued job. With an idempotency key already used by this owner, return that job
        (created=False); a different request under the same key is a Conflict. `fingerprint`
        identifies the request as the client sent it (before defaults such as a random seed).
        With `max_queued`, an owner who already has that many queued jobs is refused (RateLimited).
        With `send`, the job's Celery message is pushed in the same script (one round trip, atomic);
        without it the job is "unsent" until `mark_enqueued`, and the reaper resends it after a while."""
        job_id = new_job_id()
        queue_list, message = "", ""
        if send is not None:
            queue_list = queue_key(send.queue)
            message = task_message(send.task, [job_id], queue=send.queue, soft_time_limit=send.soft_time_limit,
                                   time_limit=send.time_limit)
        idem_key = ""
        if idempotency_key:
            digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
            idem_key = f"{PREFIX}idem:{owner}:{digest}"
            fingerprint = fingerprint or request_fingerprint({"type": job_type, "input": job_input,
                                                              "webhook": webhook})
        else:
            fingerprint = ""  # the script reads it only beside an idempotency key
        fields = {
            "id": job_id, "type": str(job_type), "owner": owner, "status": JobStatus.QUEUED.value,
            "input": json.dumps(job_input), "progress": _QUEUED_PROGRESS_JSON,
            "attempts": "0", "cancel_requested": "0",
        }
        if webhook:
            fields["webhook"] = webhook
            fields["webhook_events"] = ",".join(webhook_events)
        if model:
            fields["model"] = model
        flat = [item for pair in fields.items() for item in pair]
        for _ in range(3):
            outcome, value = self._create(
                keys=[self.key(job_id), self.ALL_INDEX, self.owner_index(owner), self.UNSENT, idem_key,
                      self.queued_set(owner), queue_list],
                args=[job_id, self.idempotency_ttl_s, fingerprint, max_queued, self.ttl_s, message, *flat],
            )
            if outcome == "limited" and self.prune_queued(owner):
                continue  # some of the counted jobs were gone or no longer queued: count again
            if outcome != "existing" or not self._never_queued(value, fingerprint):
                break
            # The key's job failed before it was ever queued (503 enqueue_failed): the advised retry
            # must create a job, not replay that failure for the key's lifetime.
            self._release(keys=[idem_key], args=[value])
        if outcome == "limited":
            raise RateLimited(f"{value} of your jobs are already queued (the limit is {max_queued}); submit more "
                              "when some have started", retry_after_s=retry_after_s,
                              details={"queued": int(value), "limit": max_queued})
        if outcome == "existing":
            first_id, first_fingerprint = value.split("|", 1)
            if first_fingerprint != fingerprint:
                raise Conflict("this Idempotency-Key was already used for a different request",
                               code="idempotency_key_reused", field="Idempotency-Key")
            job = self.get(first_id)
            if job is None:  # the first job's record has expired; the key outlived it
                raise Conflict("this Idempotency-Key belongs to a job that no longer exists",
                               code="idempotency_key_reused", field="Idempotency-Key")
            return job, False
        # Built locally from the values just written, as job_from_hash would read them back: no round
        # trip and no re-parsing of the JSON just encoded, on the hot submit path.
        job = Job(id=job_id, type=job_type, status=JobStatus.QUEUED, input=job_input, progress=_QUEUED_PROGRESS,
                  created_at=_ts(value), model=fields.get("model"), owner=owner, webhook=fields.get("webhook"),
                  webhook_events=fields["webhook_events"].split(",") if fields.get("webhook_events") else None)
        return job, True

    def mark_enqueued(self, job_id: str) -> None:
        self.redis.zrem(self.UNSENT, job_id)

    @staticmethod
    def requeue_marker(job_id: str) -> str:
        """Set by the reaper when it re-sends a job, cleared when a worker claims it: one recovery
        message per job in the queue at a time, however long the queue is."""
        return f"{PREFIX}requeued:{job_id}"

    def claimed_after_requeue(self, job_id: str) -> None:
        self.redis.delete(self.requeue_marker(job_id))

    def prune_queued(self, owner: str) -> int:
        """Drop from an owner's queued set the jobs that expired or are no longer queued (so a lost
        job cannot count against `max_queued` for ever). Returns how many were dropped."""
        members = sorted(self.redis.smembers(self.queued_set(owner)))
        if not members:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for job_id in members:
            pipe.hget(self.key(job_id), "status")
        stale = [j for j, st in zip(members, pipe.execute(), strict=True) if st != JobStatus.QUEUED.value]
        if stale:
            self.redis.srem(self.queued_set(owner), *stale)
        return len(stale)

    def prune_index(self, batch: int = 500) -> int:
        """Drop the oldest `batch` ids of the all-jobs index whose records have expired (the reaper
        calls it each tick; listing an owner's jobs prunes that owner's index as it goes)."""
        ids = self.redis.zrangebylex(self.ALL_INDEX, "-", "+", start=0, num=batch)
        if not ids:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.exists(self.key(job_id))
        gone = [j for j, present in zip(ids, pipe.execute(), strict=True) if not present]
        if gone:
            self.redis.zrem(self.ALL_INDEX, *gone)
        return len(gone)

    def _never_queued(self, idem_value: str, fingerprint: str) -> bool:
        first_id, _, first_fingerprint = idem_value.partition("|")
        job = self.get(first_id) if first_fingerprint == fingerprint else None
        return bool(job and job.status == JobStatus.FAILED and job.error and job.error.code == ENQUEUE_FAILED)

    def fail_queued(self, job_id: str, code: str, message: str) -> bool:
        error = json.dumps({"code": code, "message": message})
        return bool(self._fail_queued(keys=[self.key(job_id), self.RUNNING], args=[job_id, self.ttl_s, error]))

    def get(self, job_id: str) -> Job | None:
        data = self.redis.hgetall(self.key(job_id))
        return job_from_hash(data) if data else None

    def cancel(self, job_id: str) -> tuple[str, JobStatus | None]:
        """(outcome, status it had): outcome 'canceled' (was queued), 'requested' (running; stops at
        its next check), 'missing', or 'finished' (it had already ended with that status)."""
        outcome, _, status = self._cancel(keys=[self.key(job_id), self.RUNNING],
                                          args=[job_id, self.ttl_s]).partition(":")
        return outcome, JobStatus(status) if status else None

    def list(self, *, owner: str | None, status: JobStatus | None = None, job_type: JobType | None = None,
             limit: int = 20, cursor: str | None = None, scan_limit: int = 2000) -> tuple[list[Job], str | None]:
        """Newest first. The cursor is the last id returned; filters scan at most `scan_limit` ids a
        call and hand back a cursor to go on from."""
        index = self.owner_index(owner) if owner else self.ALL_INDEX
        upper = f"({cursor}" if cursor else "+"
        jobs: list[Job] = []
        scanned = 0
        last_seen: str | None = None
        while len(jobs) < limit and scanned < scan_limit:
            batch = self.redis.zrevrangebylex(index, upper, "-", start=0, num=min(200, scan_limit - scanned))
            if not batch:
                return jobs, None
            pipe = self.redis.pipeline(transaction=False)
            for job_id in batch:
                pipe.hgetall(self.key(job_id))
            expired = []
            for job_id, data in zip(batch, pipe.execute(), strict=True):
                scanned += 1
                last_seen = job_id
                if not data:
                    expired.append(job_id)
                    continue
                job = job_from_hash(data)
                if (status and job.status != status) or (job_type and job.type != job_type):
                    continue
                jobs.append(job)
                if len(jobs) == limit:
                    break
            if expired:  # records past their TTL: drop them from the index lazily
                self.redis.zrem(index, *expired)
            upper = f"({last_seen}"
        more = bool(self.redis.zrevrangebylex(index, f"({last_seen}", "-", start=0, num=1)) if last_seen else False
        return jobs, (last_seen if more else None)

    def wait_until_terminal(self, job_id: str, timeout_s: float) -> Job | None:
        """Block until the job ends or the timeout passes; returns the latest record."""
        deadline = time.monotonic() + timeout_s
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.events_channel(job_id))
            job = self.get(job_id)
            while job is not None and job.status not in TERMINAL_STATUSES:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                message = pubsub.get_message(timeout=min(remaining, 1.0))
                if message is None or message.get("data") in {s.value for s in TERMINAL_STATUSES}:
                    job = self.get(job_id)
            return job
        finally:
            pubsub.close()

    # --- worker side --------------------------------------------------------------------------
    def claim(self, job_id: str, token: str, *, lease_s: float, max_attempts: int) -> Claim:
        state, value = self._claim(keys=[self.key(job_id), self.RUNNING],
                                   args=[job_id, token, int(lease_s * 1000), max_attempts, self.ttl_s])
        if state == "busy":
            return Claim("busy", retry_in_s=float(value))
        return Claim(state, attempts=int(value))

    def heartbeat(self, job_id: str, token: str, *, lease_s: float) -> int:
        """1: cancel requested, 0: carry on, -1: the job is no longer ours."""
        return int(self._heartbeat(keys=[self.key(job_id)], args=[token, int(lease_s * 1000)]))

    def set_progress(self, job_id: str, token: str, fraction: float, message: str) -> bool:
        payload = json.dumps({"fraction": round(min(max(fraction, 0.0), 1.0), 4), "message": message[:500]})
        return bool(self._progress(keys=[self.key(job_id)], args=[job_id, token, payload]))

    def finish(self, job_id: str, token: str, status: JobStatus, *, output: dict | None = None,
               error: dict | None = None, progress_message: str | None = None) -> bool:
        """Move a running job we own to a terminal status. False if it is not ours any more."""
        assert status in TERMINAL_STATUSES
        fields: list[str] = []
        if output is not None:
            fields += ["output", json.dumps(output)]
        if error is not None:
            fields += ["error", json.dumps(error)]
        if status == JobStatus.SUCCEEDED:
            fields += ["progress", json.dumps({"fraction": 1.0, "message": progress_message or "done"})]
        elif progress_message:
            current = self.get(job_id)
            fraction = current.progress.fraction if current else 0.0
            fields += ["progress", json.dumps({"fraction": fraction, "message": progress_message})]
        return bool(self._finish(keys=[self.key(job_id), self.RUNNING],
                                 args=[job_id, token, status.value, self.ttl_s, *fields]))

    def record_webhook_delivery(self, job_id: str, delivery: dict, max_kept: int = 50) -> None:
        self._record_delivery(keys=[self.key(job_id)], args=[json.dumps(delivery), max_kept])

    def model_version_for(self, job_id: str, family: str) -> str:
        """The version a training job produces, allocated once so a rerun overwrites, never duplicates."""
        return self._model_version(keys=[self.key(job_id), f"{PREFIX}models:seq:{family}"], args=[family])

    # --- reaper -------------------------------------------------------------------------------
    def stale_running(self) -> list[str]:
        """Running jobs whose lease has expired: their worker died without a redelivery yet."""
        ids = list(self.redis.smembers(self.RUNNING))
        if not ids:
            return []
        now = self.server_time()
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(self.key(job_id), "status", "lease_until")
        stale = []
        for job_id, (status, lease) in zip(ids, pipe.execute(), strict=True):
            if status is None:
                self.redis.srem(self.RUNNING, job_id)
            elif status == JobStatus.RUNNING and float(lease or 0) < now:
                stale.append(job_id)
        return stale

    def unsent_older_than(self, age_s: float) -> list[str]:
        """Queued jobs whose enqueue never got confirmed (the API died between record and send)."""
        return list(self.redis.zrangebyscore(self.UNSENT, "-inf", self.server_time() - age_s, start=0, num=500))

    def queued_older_than(self, age_s: float, num: int = 500) -> list[str]:
        """The oldest jobs still queued after `age_s` (the reaper checks that each has a message)."""
        return list(self.redis.zrangebyscore(self.QUEUED_SINCE, "-inf", self.server_time() - age_s,
                                             start=0, num=num))

    def forget_queued(self, *job_ids: str) -> None:
        """Drop ids from the queued-since set whose records expired or left `queued` (the scripts keep it
        otherwise)."""
        if job_ids:
            self.redis.zrem(self.QUEUED_SINCE, *job_ids)

    def server_time(self) -> float:
        seconds, micros = self.redis.time()
        return seconds + micros / 1e6

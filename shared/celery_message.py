"""A Celery task message as the pinned kombu Redis transport stores it, built without kombu.

The API's submit script pushes this onto the queue's Redis list in the same Lua call that writes the
job record, so the record and its message exist together or not at all, in one round trip.
The layout is Celery's task protocol 2 (headers carry the task meta; the body is
`[args, kwargs, embed]`) inside kombu's virtual-transport envelope (body base64, delivery info and
tag in the properties). `tests/test_celery_message.py` compares it with what `send_task` writes and
has a real worker consume it, so a version bump that changes either format fails CI.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"
# Celery puts its app's process id (`app.thread_oid`) here; no worker replies to a task message,
# since results live in the job record, but the field keeps the layout the same.
REPLY_TO = str(uuid.uuid4())


@dataclass(frozen=True)
class TaskSend:
    """Which task a new job's message names, on which queue, with which time limits (seconds)."""

    task: str
    queue: str
    soft_time_limit: float | None = None
    time_limit: float | None = None


def queue_key(queue: str) -> str:
    """The Redis list a queue's priority-0 messages live in (kombu's `_q_for_pri` at priority 0)."""
    return queue


def task_message(task: str, args: list[Any], *, queue: str, soft_time_limit: float | None = None,
                 time_limit: float | None = None, task_id: str | None = None) -> str:
    """The JSON string kombu's Redis transport would LPUSH for `send_task(task, args, queue=queue)`."""
    task_id = task_id or str(uuid.uuid4())
    body = json.dumps([args, {}, _EMBED])
    message = {
        "body": base64.b64encode(body.encode()).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None, "expires": None,
            "group": None, "group_index": None, "retries": 0, "timelimit": [time_limit, soft_time_limit],
            "root_id": task_id, "parent_id": None, "argsrepr": repr(args), "kwargsrepr": "{}",
            "origin": ORIGIN, "ignore_result": None, "replaced_task_nesting": 0, "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": REPLY_TO,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(message)


def read_task(raw: str | bytes) -> tuple[str, list[Any]] | None:
    """(task name, args) of a message in this layout; None for anything else (left to Celery)."""
    try:
        message = json.loads(raw)
        return message["headers"]["task"], json.loads(base64.b64decode(message["body"]))[0]
    except (ValueError, KeyError, IndexError, TypeError):
        return None

"""Long-lived thread pools, one per name and process. A generate job encodes and uploads in threads;
starting those threads afresh for every job cost about 8 % of a job's time in the worker (py-spy,
docs/BENCHMARKS.md). Threads do not survive a fork, so a Celery pool child gets pools of its own."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

_pools: dict[tuple[str, int], ThreadPoolExecutor] = {}
_lock = threading.Lock()


def thread_pool(name: str, workers: int) -> ThreadPoolExecutor:
    """The process's pool `name` with `workers` threads, started on first use. Work submitted to it
    must not wait on other work in the same pool (it could wait for a thread that never frees)."""
    key = (name, workers)
    with _lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        return pool


def _forget_after_fork() -> None:
    global _lock
    _pools.clear()  # the parent's threads are not in the child
    _lock = threading.Lock()  # it may have been held by a parent thread at the fork


os.register_at_fork(after_in_child=_forget_after_fork)

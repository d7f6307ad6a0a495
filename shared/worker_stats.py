"""Each worker process publishes its memory (resident, and GPU when CUDA is in use) to Redis every few
seconds with a short expiry; the API's /metrics reads them, so one scrape sees every worker on
every machine without scraping workers themselves."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

import redis

KEY_PREFIX = "atelier:workers:"
INDEX = "atelier:workers-index"  # name -> last publish time
EXPIRY_S = 60


def resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:  # Linux: pages resident now (getrusage gives only the peak)
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def gpu_bytes() -> dict[str, int]:
    """CUDA memory of this process, only once it has used CUDA (never initialises it here)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    return {"gpu_allocated": torch.cuda.memory_allocated(), "gpu_reserved": torch.cuda.memory_reserved()}


def publish(client: redis.Redis, name: str, role: str) -> None:
    key = KEY_PREFIX + name
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.hset(key, mapping={"rss": resident_bytes(), "role": role, "updated": now, **gpu_bytes()})
    pipe.expire(key, EXPIRY_S)
    pipe.zadd(INDEX, {name: now})  # /metrics reads the recent members, never a SCAN of the keyspace
    pipe.execute()


def live_workers(client: redis.Redis) -> list[str]:
    """Names of the workers that published within EXPIRY_S (older index entries are dropped)."""
    cutoff = time.time() - EXPIRY_S
    client.zremrangebyscore(INDEX, "-inf", cutoff)
    return sorted(client.zrangebyscore(INDEX, cutoff, "+inf"))


def start_publisher(client: redis.Redis, role: str, node: str | None = None,
                    interval_s: float = 10.0) -> threading.Thread:
    name = f"{node or socket.gethostname()}:{os.getpid()}"

    def loop() -> None:
        while True:
            try:
                publish(client, name, role)
            except Exception:  # Redis away for a moment: the next round tries again
                pass
            time.sleep(interval_s)

    thread = threading.Thread(target=loop, name="worker-stats", daemon=True)
    thread.start()
    return thread

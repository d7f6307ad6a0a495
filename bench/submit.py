"""Submit throughput and latency: POST /v1/jobs with N concurrent keep-alive clients, side by side
with raw Celery `send_task` to the same Redis, then a check that no accepted job was lost.

By default it starts its own Valkey, SeaweedFS and gunicorn API (no worker, so every accepted job
must still be queued at the end); `--url` targets a running service instead.

    .venv/bin/python -m bench.submit --seconds 10 --clients 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis
import requests

from deploy.local.servers import LocalStack, free_port
from shared.queue import JOB_TASKS, make_celery
from shared.schemas import JobType
from shared.settings import Settings

BODY = {"type": "train", "input": {"family": "cvae", "dataset": "fashion-mnist", "preset": "tiny"}}


def run_threads(threads: list[threading.Thread]) -> float:
    """Start them all, wait for all; the seconds it took."""
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def http_client(host: str, port: int, deadline: float, latencies: list[float], accepted: list[str],
                      errors: list[int]) -> None:
    """One keep-alive HTTP/1.1 connection submitting back to back (lighter than requests on 2 cores)."""
    reader, writer = await asyncio.open_connection(host, port)
    payload = json.dumps(BODY).encode()
    request = (f"POST /v1/jobs HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(payload)}\r\nConnection: keep-alive\r\n\r\n").encode() + payload
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status == 202:
                accepted.append(json.loads(body)["id"])
            else:
                errors.append(status)
    finally:
        writer.close()


def run_http(url: str, clients: int, seconds: float) -> dict:
    host, port = url.split("//")[1].split(":")
    latencies: list[float] = []
    accepted: list[str] = []
    errors: list[int] = []

    async def main() -> None:
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(http_client(host, int(port), deadline, latencies, accepted, errors)
                               for _ in range(clients)))

    started = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "accepted": accepted, "errors": len(errors), "elapsed": elapsed,
            "latencies": latencies}


def run_send_task(settings: Settings, clients: int, seconds: float) -> dict:
    app = make_celery(settings, name="bench")
    spec = JOB_TASKS[JobType.TRAIN]
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def loop() -> None:
        mine = []
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            app.send_task(spec.name, args=["bench-raw"], queue="bench-raw")
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    elapsed = run_threads([threading.Thread(target=loop) for _ in range(clients)])
    redis.Redis.from_url(settings.redis_url).delete("bench-raw")
    return {"requests": len(latencies), "accepted": [None] * len(latencies), "errors": 0, "elapsed": elapsed,
            "latencies": latencies}


def check_lost(settings: Settings, accepted: list[str], own_stack: bool) -> int:
    """Every accepted job must have its record; with no worker running, its message must be queued."""
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    pipe = client.pipeline(transaction=False)
    for job_id in accepted:
        pipe.exists(f"atelier:job:{job_id}")
    missing = sum(1 for found in pipe.execute() if not found)
    if own_stack:
        queued = client.llen(JOB_TASKS[JobType.TRAIN].queue)
        missing = max(missing, len(accepted) - queued)
    return missing


def start_api(env: dict, port: int, workers: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "deploy/gunicorn.conf.py", "--workers", str(workers),
         "api:create_app()"], env={**os.environ, **env, "PORT": str(port), "LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(100):
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok:
                return process
        except requests.RequestException:
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError("API did not start")


def row(name: str, result: dict, lost: int | str) -> str:
    lat = [x * 1000 for x in result["latencies"]]
    rate = result["requests"] / result["elapsed"]
    return (f"| {name} | {result['requests']} | {len(result['accepted'])} | {result['errors']} | {rate:,.0f} | "
            f"{statistics.median(lat):.1f} | {percentile(lat, 0.99):.1f} | {lost} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running API (default: start a private stack)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--web-workers", type=int, default=2)
    args = parser.parse_args()

    stack = api = None
    try:
        if args.url:
            settings, url = Settings.from_env(), args.url
        else:
            stack = LocalStack(Path(tempfile.mkdtemp(prefix="atelier-bench-"))).start()
            settings = Settings.from_env(**stack.env)
            port = free_port()
            # no worker consumes here, so the per-key queued-jobs limit is lifted: it would turn the
            # measurement into one of 429 answers after the first thousand
            api = start_api({**stack.env, "ATELIER_MAX_QUEUED_JOBS": "0"}, port, args.web_workers)
            url = f"http://127.0.0.1:{port}"
        run_http(url, 2, 1.0)  # warm up connections and code paths
        redis.Redis.from_url(settings.redis_url).delete(JOB_TASKS[JobType.TRAIN].queue)
        single = run_http(url, 1, min(args.seconds, 5.0))  # latency without queueing
        http = run_http(url, args.clients, args.seconds)
        lost = check_lost(settings, single["accepted"] + http["accepted"], own_stack=stack is not None)
        raw = run_send_task(settings, args.clients, args.seconds)
        print(f"# submit benchmark: {args.clients} clients x {args.seconds:.0f} s, {os.cpu_count()} cores, "
              f"{platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}")
        print("| path | requests | accepted | errors | per second | p50 ms | p99 ms | lost |")
        print("|---|---|---|---|---|---|---|---|")
        print(row("POST /v1/jobs, 1 client", single, "(below)"))
        print(row(f"POST /v1/jobs (gunicorn {args.web_workers}x gthread)", http, lost))
        print(row("raw Celery send_task (threads)", raw, "n/a"))
    finally:
        if api:
            api.terminate()
            api.wait(10)
        if stack:
            stack.stop()


if __name__ == "__main__":
    main()

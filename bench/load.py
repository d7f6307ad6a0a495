"""Load, scale and soak: C clients submitting a mix of job types for T minutes against the real
service (gunicorn API, Celery workers, Valkey, SeaweedFS), with 1, 2, 4 … worker processes side by
side. Each client submits a job and waits for it before the next (closed loop), so the queue always
holds about C jobs and throughput is what the workers can do.

Reports per worker count: submitted, accepted, completed, failed, lost (accepted but never ended, or
no record), submit latency and end-to-end job latency (p50 / p99), jobs per minute, the speed-up
over the first worker count, and worker memory over time from /metrics (first, max, last sample).

    .venv/bin/python -m bench.load --workers 1,2,4 --minutes 3 --clients 8
    .venv/bin/python -m bench.load --workers 2 --minutes 30 --clients 4 --sample-seconds 30   # soak
    .venv/bin/python -m bench.load --workers 1 --minutes 2 --mix describe   # describe jobs only
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from bench.submit import percentile, run_threads, start_api
from deploy.local.servers import LocalStack, free_port

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
PROMPTS = ["a red dress", "ankle boots", "a warm coat", "sneakers", "a bag", "long trousers", "a pullover"]
COPY_PROMPTS = ["black short sleeve jumpsuit", "navy blue checked shirt", "white sneakers", "red floral maxi dress",
                "grey melange sweatshirt", "brown leather wallet"]


def job_mix(rng: random.Random, model: str, mix: str = "service") -> dict:
    """"service": 70 % generate (conditions or a prompt), 15 % hybrid, 10 % traverse, 5 % a small
    training run. "generate": generate jobs only; "describe": describe jobs only, on the description
    model (what batching across jobs serves)."""
    roll = 0.0 if mix == "generate" else rng.random()
    seed = rng.randrange(1 << 30)
    if mix == "describe":
        return {"type": "describe", "input": {"prompt": rng.choice(COPY_PROMPTS), "n": rng.choice([2, 4]),
                                              "max_tokens": 60, "seed": seed, "model": model}}
    if roll < 0.70:
        start = {"conditions": {"class": rng.choice(CLASSES)}} if rng.random() < 0.5 else {
            "prompt": rng.choice(PROMPTS)}
        return {"type": "generate_images", "input": {**start, "n": rng.choice([4, 8, 16]), "seed": seed,
                                                     "model": model}}
    if roll < 0.85:
        a, b = rng.sample(CLASSES, 2)
        return {"type": "hybrid", "input": {"a": {"conditions": {"class": a}}, "b": {"conditions": {"class": b}},
                                            "steps": 8, "seed": seed, "model": model}}
    if roll < 0.95:
        return {"type": "traverse", "input": {"start": {"conditions": {"class": rng.choice(CLASSES)}}, "steps": 7,
                                              "seed": seed, "model": model}}
    return {"type": "train", "input": {"family": "cvae", "dataset": "fashion-mnist", "preset": "tiny",
                                       "epochs": 1, "max_train_examples": 500, "seed": seed, "promote": "never"}}


@dataclass
class Results:
    submitted: int = 0
    accepted: list[str] = field(default_factory=list)
    rejected: int = 0
    submit_latency: list[float] = field(default_factory=list)
    job_latency: list[float] = field(default_factory=list)
    ended: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def client_loop(base: str, model: str, deadline: float, results: Results, seed: int, mix: str = "service") -> None:
    rng, http = random.Random(seed), requests.Session()
    while time.monotonic() < deadline:
        body = job_mix(rng, model, mix)
        started = time.monotonic()
        try:
            response = http.post(f"{base}/v1/jobs", json=body, timeout=30)
        except requests.RequestException:
            response = None
        with results.lock:
            results.submitted += 1
            results.submit_latency.append(time.monotonic() - started)
            if response is None or response.status_code != 202:
                results.rejected += 1
                continue
            job_id = response.json()["id"]
            results.accepted.append(job_id)
        status = "queued"
        while status not in ("succeeded", "failed", "canceled") and time.monotonic() < deadline + 600:
            try:
                status = http.get(f"{base}/v1/jobs/{job_id}", headers={"Prefer": "wait=20"}, timeout=40).json()[
                    "status"]
            except (requests.RequestException, ValueError, KeyError):
                time.sleep(1)
        with results.lock:
            results.ended[job_id] = status
            if status == "succeeded":
                results.job_latency.append(time.monotonic() - started)


def worker_memory(base: str, prefix: str) -> dict[str, float]:
    """Resident bytes of this phase's worker processes (a stopped phase's entries linger until expiry)."""
    text = requests.get(f"{base}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "atelier_worker_resident_memory_bytes":
            return {s.labels["worker"]: s.value for s in family.samples if s.labels["worker"].startswith(prefix)}
    return {}


def sample_memory(base: str, prefix: str, stop: threading.Event, every_s: float,
                  out: list[tuple[float, dict]]) -> None:
    t0 = time.monotonic()
    while not stop.wait(every_s):
        try:
            out.append((time.monotonic() - t0, worker_memory(base, prefix)))
            # as it goes, so a long soak's curve survives whatever happens at its end
            print(f"memory {out[-1][0] / 60:6.1f} min {sum(out[-1][1].values()) / 1e6:8.0f} MB", file=sys.stderr,
                  flush=True)
        except requests.RequestException:
            pass


def start_workers(env: dict, count: int, log_dir: Path) -> list[subprocess.Popen]:
    workers = []
    for i in range(count):
        log = (log_dir / f"load-worker-{count}-{i}.log").open("ab")
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.main", "worker", "--queues",
             "interactive,batch,training,webhooks", "--concurrency", "1", "--pool", "prefork", "--hostname",
             f"load{count}-{i}@%h", "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
            cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    return workers


def stop_all(processes: list[subprocess.Popen]) -> None:
    for p in processes:
        if p.poll() is None:
            os.killpg(p.pid, 15)
    for p in processes:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)


def wait_until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(1)


def count_lost(base: str, accepted: list[str]) -> int:
    """Accepted jobs that did not end (or have no record), read back over one keep-alive connection."""
    lost = 0
    with requests.Session() as http:
        for job_id in accepted:
            response = http.get(f"{base}/v1/jobs/{job_id}", timeout=30)
            if response.status_code != 200 or response.json()["status"] not in ("succeeded", "failed", "canceled"):
                lost += 1
    return lost


def run_phase(base: str, env: dict, count: int, model: str, args: argparse.Namespace, log_dir: Path) -> dict:
    workers = start_workers(env, count, log_dir)
    prefix = f"load{count}-"
    wait_until(lambda: len(worker_memory(base, prefix)) >= count, 120)  # every pool child has published
    results, memory, stop = Results(), [], threading.Event()
    sampler = threading.Thread(target=sample_memory, args=(base, prefix, stop, args.sample_seconds, memory),
                               daemon=True)
    sampler.start()
    deadline = time.monotonic() + args.minutes * 60
    elapsed = run_threads([threading.Thread(target=client_loop,
                                            args=(base, model, deadline, results, 1000 * count + i, args.mix))
                           for i in range(args.clients)])
    stop.set()
    stop_all(workers)
    lost = count_lost(base, results.accepted)
    totals = [sum(sample.values()) / 1e6 for _, sample in memory if sample]
    return {"workers": count, "submitted": results.submitted, "accepted": len(results.accepted),
            "completed": sum(s == "succeeded" for s in results.ended.values()),
            "failed": sum(s == "failed" for s in results.ended.values()), "lost": lost,
            "per_minute": sum(s == "succeeded" for s in results.ended.values()) / (elapsed / 60),
            "submit_p50": percentile(results.submit_latency, 0.5) * 1000,
            "submit_p99": percentile(results.submit_latency, 0.99) * 1000,
            "job_p50": percentile(results.job_latency, 0.5), "job_p99": percentile(results.job_latency, 0.99),
            "mem_first": totals[0] if totals else float("nan"), "mem_max": max(totals, default=float("nan")),
            "mem_last": totals[-1] if totals else float("nan"), "memory": memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2,4", help="worker process counts, one phase each")
    parser.add_argument("--minutes", type=float, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--sample-seconds", type=float, default=10)
    parser.add_argument("--torch-threads", default="1", help="OMP_NUM_THREADS per worker process")
    parser.add_argument("--mix", choices=("service", "generate", "describe"), default="service",
                        help="service: the mixed workload; generate: generate_images jobs only; describe: describe "
                             "jobs only, on an lm at the cpu preset's size trained for a minute")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="atelier-load-"))
    stack = LocalStack(root / "servers").start()
    env = {**stack.env, "ATELIER_VAR": str(root), "ATELIER_DEVICE": "cpu", "ATELIER_PRELOAD_INTERPRETER": "true",
           "OMP_NUM_THREADS": args.torch_threads, "ATELIER_ALLOW_DATASET_DOWNLOAD": "false", "LOG_LEVEL": "WARNING",
           "ATELIER_MAX_QUEUED_JOBS": "0"}
    if os.environ.get("ATELIER_DATASETS"):
        env["ATELIER_DATASETS"] = os.environ["ATELIER_DATASETS"]
    port = free_port()
    api = start_api(env, port, 2)
    base = f"http://127.0.0.1:{port}"
    try:
        setup = start_workers(env, 1, root)
        train = {"family": "cvae", "dataset": "fashion-mnist", "preset": "tiny", "epochs": 2, "seed": 1}
        if args.mix == "describe":  # the served model's size, not its quality, is what load measures
            train = {"family": "lm", "dataset": "descriptions", "preset": "cpu", "max_minutes": 1,
                     "max_train_examples": 2000, "seed": 1}
        job = requests.post(f"{base}/v1/jobs", timeout=30, json={"type": "train", "input": train}).json()
        wait_until(lambda: requests.get(f"{base}/v1/jobs/{job['id']}", timeout=30).json()["status"] in (
            "succeeded", "failed"), 600)
        model = requests.get(f"{base}/v1/jobs/{job['id']}", timeout=30).json()["output"]["model"]
        stop_all(setup)
        phases = [run_phase(base, env, int(n), model, args, root) for n in args.workers.split(",")]
    finally:
        api.terminate()
        stack.stop()
    print(f"# load: {args.clients} closed-loop clients x {args.minutes:g} min per phase, {args.mix} mix, "
          f"{os.cpu_count()} cores, {platform.machine()}, OMP_NUM_THREADS={args.torch_threads}, "
          + "".join(f"{name}={os.environ[name]}, " for name in sorted(os.environ) if name.startswith("ATELIER_BATCH_"))
          + time.strftime("%Y-%m-%d %H:%M"))
    print("| workers | submitted | accepted | completed | failed | lost | jobs/min | speed-up | submit p50/p99 ms "
          "| job p50/p99 s | worker MB first/max/last |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for p in phases:
        print(f"| {p['workers']} | {p['submitted']} | {p['accepted']} | {p['completed']} | {p['failed']} | "
              f"{p['lost']} | {p['per_minute']:.1f} | {p['per_minute'] / phases[0]['per_minute']:.2f}x | "
              f"{p['submit_p50']:.0f} / {p['submit_p99']:.0f} | {p['job_p50']:.1f} / {p['job_p99']:.1f} | "
              f"{p['mem_first']:.0f} / {p['mem_max']:.0f} / {p['mem_last']:.0f} |")
    if len(phases) == 1:  # a soak: memory over time
        print("\nminute | worker resident MB (sum)")
        for t, sample in phases[0]["memory"]:
            print(f"{t / 60:6.1f} | {sum(sample.values()) / 1e6:.0f}")


if __name__ == "__main__":
    main()

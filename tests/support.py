"""Test helpers: a real API served over HTTP in a thread, a real Celery worker subprocess, and an
HTTP client that waits for jobs."""

from __future__ import annotations

import copy
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from werkzeug.serving import make_server

from deploy.local.servers import LocalStack, free_port
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[1]

# Short leases so lost-worker recovery happens within a test's patience.
FAST_RECOVERY = {"ATELIER_JOB_LEASE_SECONDS": "4", "ATELIER_HEARTBEAT_SECONDS": "0.5",
                 "ATELIER_REAPER_INTERVAL_SECONDS": "2"}
# Webhooks go to a receiver the tests run on loopback, retried quickly.
WEBHOOK_SECRET = "test-webhook-secret-0123456789"
WEBHOOKS = {"ATELIER_WEBHOOK_SECRET": WEBHOOK_SECRET, "ATELIER_WEBHOOK_ALLOW_PRIVATE": "true",
            "ATELIER_WEBHOOK_BACKOFF_SECONDS": "0.3", "ATELIER_WEBHOOK_MAX_ATTEMPTS": "3"}


def datasets_dir() -> Path | None:
    configured = os.environ.get("ATELIER_DATASETS")
    folder = Path(configured) if configured else REPO.parent / "shared" / "datasets"
    return folder if folder.is_dir() else None


def stack_env(stack: LocalStack, var_dir: Path, **extra: str) -> dict[str, str]:
    env = {**stack.env, **FAST_RECOVERY, **WEBHOOKS, "ATELIER_VAR": str(var_dir),
           "ATELIER_ALLOW_DATASET_DOWNLOAD": "false", "ATELIER_DEVICE": "cpu",
           "ATELIER_BASE_MODELS": str(var_dir / "base-models"), **extra}
    folder = datasets_dir()
    if folder:
        env["ATELIER_DATASETS"] = str(folder)
    return env


def on_redis_db(env: dict[str, str], db: int, **extra: str) -> dict[str, str]:
    """The same servers with another Redis database: jobs submitted there are queued where no test
    worker consumes them (for tests of the API alone: keys, limits, refusals)."""
    base = env["REDIS_URL"].rsplit("/", 1)[0]
    return {**env, "REDIS_URL": f"{base}/{db}", **extra}


def settings_from(env: dict[str, str]) -> Settings:
    """Settings as a process started with `env` would read them (explicit values win)."""
    return Settings.from_env(**env)


class ApiServer:
    """The Flask app behind a real threaded HTTP server on a free port."""

    def __init__(self, settings: Settings) -> None:
        from api import create_app

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log in test output
        self.port = free_port()
        self.server = make_server("127.0.0.1", self.port, create_app(settings), threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()


class WorkerProcess:
    """`celery -A worker.main worker` as a subprocess with one prefork child."""

    def __init__(self, env: dict[str, str], log_path: Path, name: str = "w1", concurrency: int = 1) -> None:
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self.name = name
        self.concurrency = concurrency
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> WorkerProcess:
        self._log = self.log_path.open("ab")
        cmd = [sys.executable, "-m", "celery", "-A", "worker.main", "worker", "--queues",
               "interactive,training,batch,webhooks,maintenance", "--concurrency", str(self.concurrency),
               "--pool", "prefork",
               "--hostname", f"{self.name}@%h", "--without-gossip", "--without-mingle", "--loglevel", "INFO"]
        self.process = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.tail()}")
            if b" ready." in self.log_path.read_bytes():
                return self
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready in {timeout}s:\n{self.tail()}")

    def children(self) -> list[int]:
        assert self.process is not None
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def kill_child(self, timeout: float = 30) -> int:
        """kill -9 of the pool child that runs the task (waiting for one: right after a kill the pool is
        still starting its replacement)."""
        deadline = time.monotonic() + timeout
        while not (children := self.children()):
            if time.monotonic() > deadline:
                raise AssertionError(f"the worker has no pool child:\n{self.tail()}")
            time.sleep(0.1)
        os.kill(children[0], signal.SIGKILL)
        return children[0]

    def kill_all(self) -> None:
        """kill -9 of the whole worker (main process and children)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Client:
    """Talks to the API over HTTP, as a merchandiser's tools would."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()

    def submit(self, job_type: str, job_input: dict, *, headers: dict | None = None,
               expect: int | tuple[int, ...] = 202) -> dict:
        response = self.http.post(f"{self.base}/v1/jobs", json={"type": job_type, "input": job_input},
                                  headers=headers or {}, timeout=70)
        expected = expect if isinstance(expect, tuple) else (expect,)
        assert response.status_code in expected, response.text
        return response.json()

    def get(self, job_id: str) -> dict:
        response = self.http.get(f"{self.base}/v1/jobs/{job_id}", timeout=70)
        assert response.status_code == 200, response.text
        return response.json()

    def wait(self, job_id: str, timeout: float = 120, statuses: tuple[str, ...] = ("succeeded", "failed",
                                                                                      "canceled")) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(1, min(30, int(deadline - time.monotonic())))
            job = self.http.get(f"{self.base}/v1/jobs/{job_id}", headers={"Prefer": f"wait={remaining}"},
                                timeout=remaining + 10).json()
            if job["status"] in statuses or time.monotonic() > deadline:
                return job

    def wait_for(self, job_id: str, predicate: Any, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(job_id)
            if predicate(job):
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} never matched; last: {job}")

    def download(self, url: str) -> bytes:
        response = requests.get(url, timeout=30)
        assert response.status_code == 200, response.text
        return response.content

    @contextmanager
    def worker_busy(self) -> Iterator[None]:
        """Hold the only worker slot with a long training run on Fashion-MNIST (a test using this needs
        the `fashion_mnist_available` fixture), so that jobs submitted meanwhile wait in the queue
        together; leaving the block cancels the run and the queued jobs start."""
        long = self.submit("train", {"family": "cvae", "dataset": "fashion-mnist", "preset": "tiny", "epochs": 300,
                                     "max_train_examples": 60000, "promote": "never"})
        try:
            self.wait_for(long["id"], lambda j: j["status"] == "running", timeout=120)
            yield
        finally:  # never leave the only worker slot to a 300-epoch run
            assert self.http.post(f"{self.base}/v1/jobs/{long['id']}/cancel", timeout=10).status_code == 202


class MemoryCheckpoint:
    """Checkpoint I/O in memory for the training-loop tests; deep-copies as serialising would, so
    later steps cannot change a saved state."""

    def __init__(self) -> None:
        self.state: dict | None = None
        self.saves = 0

    def load(self) -> dict | None:
        return self.state

    def save(self, state: dict) -> None:
        self.state = copy.deepcopy(state)
        self.saves += 1


def whole_and_resumed(run: Any, stop_after_calls: int = 6) -> tuple[Any, Any, MemoryCheckpoint]:
    """A training loop run uninterrupted, and run again stopped (JobCanceled) after
    `stop_after_calls` stop checks (4 batches an epoch in the tests: inside epoch two), then resumed
    from its checkpoint. `run(should_stop, checkpoint)` calls the loop. Returns (whole, resumed,
    the checkpoint as the interrupted run left it)."""
    from shared.errors import JobCanceled

    whole = run(lambda: False, None)
    checkpoint, calls = MemoryCheckpoint(), {"n": 0}

    def stop_in_epoch_two() -> bool:
        calls["n"] += 1
        return calls["n"] > stop_after_calls

    try:
        run(stop_in_epoch_two, checkpoint)
    except JobCanceled:
        pass
    else:
        raise AssertionError("the interrupted run was not stopped")
    interrupted = copy.deepcopy(checkpoint)
    return whole, run(lambda: False, checkpoint), interrupted

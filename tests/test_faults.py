"""Workers killed mid-job: jobs end succeeded (resumed) or failed/worker_lost, never stuck in running.

A private stack per module, so killing workers here never disturbs the other tests."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.servers import LocalStack
from shared.storage import Storage
from tests.support import REPO, ApiServer, Client, WorkerProcess, datasets_dir, settings_from, stack_env

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

# Long enough to be killed mid-way, a few seconds per epoch on 2 cores.
LONG_TRAIN = {"family": "cvae", "dataset": "fashion-mnist", "preset": "tiny", "epochs": 3,
              "max_train_examples": 4000, "seed": 5}


@pytest.fixture(scope="module")
def fault_env(tmp_path_factory: pytest.TempPathFactory, fashion_mnist_available: Path) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("faults")
    stack = LocalStack(root / "servers").start()
    env = stack_env(stack, root, ATELIER_PRELOAD_INTERPRETER="false")  # workers here never read prompts
    env["_root"] = str(root)
    yield env
    stack.stop()


@pytest.fixture(scope="module")
def fault_client(fault_env: dict) -> Iterator[Client]:
    server = ApiServer(settings_from({k: v for k, v in fault_env.items() if not k.startswith("_")})).start()
    yield Client(server.url)
    server.stop()


@pytest.fixture
def start_worker(fault_env: dict) -> Iterator:
    started: list[WorkerProcess] = []

    def start(name: str) -> WorkerProcess:
        worker = WorkerProcess(fault_env, Path(fault_env["_root"]) / f"{name}.log", name=name).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def beat(fault_env: dict) -> Iterator[subprocess.Popen]:
    root = Path(fault_env["_root"])
    log = (root / "beat.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker.main", "beat", "--schedule", str(root / "beat-schedule"),
         "--loglevel", "INFO"], cwd=REPO, env={**os.environ, **fault_env}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    yield process
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(20)


def running_epoch(client: Client, job_id: str, attempts: int, epoch: int = 2) -> dict:
    """Wait until attempt `attempts` is training epoch >= `epoch` (so a checkpoint exists)."""
    return client.wait_for(job_id, lambda j: j["status"] == "running" and j["attempts"] == attempts
                           and f"epoch {epoch}/" in j["progress"]["message"], timeout=120)


def gan_on_catalog(client: Client) -> dict:
    """A tiny cGAN job on a catalog slice, long enough to be killed in its second epoch."""
    done = client.wait(client.submit("import_dataset", {
        "name": "fault-slice", "classes": ["Tshirts", "Shirts", "Casual Shoes", "Handbags", "Watches", "Tops"],
        "max_per_class": 120})["id"], timeout=240)
    assert done["status"] == "succeeded", done
    return {"family": "cgan", "dataset": "fault-slice", "preset": "tiny", "epochs": 3, "max_train_examples": 640,
            "seed": 5}


@pytest.mark.parametrize("family", ["cvae", "cgan"])
def test_kill_child_mid_training_resumes_from_checkpoint(fault_client: Client, start_worker, fault_env: dict,
                                                         family: str) -> None:
    if family == "cgan" and not (datasets_dir() and (datasets_dir() / "fashion-product-images-small").is_dir()):
        pytest.skip("ATELIER_DATASETS/fashion-product-images-small is not available")
    worker = start_worker(f"kill-child-{family}")
    job = fault_client.submit("train", LONG_TRAIN if family == "cvae" else gan_on_catalog(fault_client))
    running_epoch(fault_client, job["id"], attempts=1)
    worker.kill_child()
    done = fault_client.wait(job["id"], timeout=180)
    assert done["status"] == "succeeded", (done, worker.tail())
    assert done["attempts"] == 2
    storage = Storage(settings_from({k: v for k, v in fault_env.items() if not k.startswith("_")}))
    metrics = storage.get_json(done["output"]["artifacts"]["metrics"]["key"])
    assert metrics["resumed_from_epoch"] >= 1  # picked up after the killed run's last checkpoint
    assert [row["epoch"] for row in metrics["history"]] == [1, 2, 3]
    # a rerun replaces outputs: one version for the job, no checkpoint left behind
    family, version = done["model"].split("@")
    assert not storage.exists(f"jobs/{job['id']}/checkpoint.pt")
    models = fault_client.http.get(f"{fault_client.base}/v1/models", timeout=10).json()["models"]
    assert [m["ref"] for m in models if m["job_id"] == job["id"]] == [done["model"]]


def test_repeated_kills_end_in_worker_lost(fault_client: Client, start_worker) -> None:
    worker = start_worker("kill-repeatedly")
    job = fault_client.submit("train", {**LONG_TRAIN, "epochs": 50})
    for attempt in (1, 2, 3):
        fault_client.wait_for(job["id"], lambda j, a=attempt: j["status"] == "running" and j["attempts"] == a
                              and j["progress"]["fraction"] > 0, timeout=120)
        worker.kill_child()
    done = fault_client.wait(job["id"], timeout=120)
    assert done["status"] == "failed" and done["error"]["code"] == "worker_lost", (done, worker.tail())
    assert done["attempts"] == 3


def test_whole_worker_killed_is_recovered_by_the_reaper(fault_client: Client, start_worker, beat) -> None:
    first = start_worker("doomed")
    job = fault_client.submit("train", LONG_TRAIN)
    running_epoch(fault_client, job["id"], attempts=1)
    first.kill_all()  # its message stays unacked in Redis until the (hours-long) visibility timeout
    replacement = start_worker("replacement")
    started = time.monotonic()
    done = fault_client.wait(job["id"], timeout=180)
    assert done["status"] == "succeeded", (done, replacement.tail())
    assert done["attempts"] == 2 and time.monotonic() - started < 150


def test_repeated_kills_mid_generate_leave_nothing_stuck_or_doubled(fault_client: Client, start_worker,
                                                                   fault_env: dict) -> None:
    worker = start_worker("kill-generate")
    trained = fault_client.wait(fault_client.submit("train", {**LONG_TRAIN, "epochs": 1, "max_train_examples": 500,
                                                              "promote": "never"})["id"], timeout=180)
    assert trained["status"] == "succeeded", worker.tail()
    jobs = [fault_client.submit("generate_images", {"conditions": {"class": "Dress"}, "n": 64, "seed": i,
                                                    "model": trained["output"]["model"]}) for i in range(12)]
    def statuses() -> list[str]:
        return [fault_client.get(j["id"])["status"] for j in jobs]

    kills = 0
    while kills < 6:  # kill whichever job is running, six times over
        deadline = time.monotonic() + 60
        while "running" not in (now := statuses()) and time.monotonic() < deadline:
            if all(s in ("succeeded", "failed") for s in now):
                break
            time.sleep(0.2)
        if "running" not in now:
            break
        worker.kill_child()
        kills += 1
        time.sleep(1.5)
    assert kills >= 3
    storage = Storage(settings_from({k: v for k, v in fault_env.items() if not k.startswith("_")}))
    for job in jobs:
        done = fault_client.wait(job["id"], timeout=240)
        assert done["status"] in ("succeeded", "failed"), (done, worker.tail())  # never stuck
        if done["status"] == "failed":
            assert done["error"]["code"] == "worker_lost" and done["attempts"] == 3
            assert not storage.exists(f"jobs/{job['id']}/manifest.json")
            continue
        keys = sorted(storage.list(f"jobs/{job['id']}/"))  # a rerun rewrote the same keys: no extras
        assert keys == [f"jobs/{job['id']}/{name}" for name in ("contact_sheet.png", "images.zip", "manifest.json")]
        with zipfile.ZipFile(io.BytesIO(storage.get(f"jobs/{job['id']}/images.zip"))) as archive:
            assert len(archive.namelist()) == 64 and len(done["output"]["images"]) == 64
        assert set(storage.get_json(done["output"]["manifest"]["key"])["objects"]) <= set(keys)


def test_two_workers_race_for_a_redelivered_job(fault_client: Client, start_worker, fault_env: dict) -> None:
    first, second = start_worker("racer-a"), start_worker("racer-b")
    job = fault_client.submit("train", LONG_TRAIN)
    running_epoch(fault_client, job["id"], attempts=1)
    for worker in (first, second):  # whichever ran it, its message goes back and both reach for it
        worker.kill_child()
    done = fault_client.wait(job["id"], timeout=180)
    assert done["status"] == "succeeded", (done, first.tail(), second.tail())
    assert done["attempts"] == 2  # one takeover, not two runs
    models = fault_client.http.get(f"{fault_client.base}/v1/models", timeout=10).json()["models"]
    assert [m["ref"] for m in models if m["job_id"] == job["id"]] == [done["model"]]
    storage = Storage(settings_from({k: v for k, v in fault_env.items() if not k.startswith("_")}))
    assert not storage.exists(f"jobs/{job['id']}/checkpoint.pt")

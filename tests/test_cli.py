"""The `atelier` console script, run as a subprocess against the API over HTTP, as a merchandiser's
script would: submit and wait, status, list, download, models, cancel, and the errors people meet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from deploy.local.servers import free_port
from shared.api_keys import hash_key
from tests.support import ApiServer, Client, WorkerProcess, on_redis_db, settings_from

pytestmark = pytest.mark.e2e
ATELIER = str(Path(sys.executable).parent / "atelier")


def atelier(*args: str, url: str, key: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "ATELIER_URL": url}
    env.pop("ATELIER_API_KEY", None)
    if key:
        env["ATELIER_API_KEY"] = key
    return subprocess.run([ATELIER, *args], capture_output=True, text=True, env=env, timeout=180, cwd=cwd)


def test_submit_wait_status_list_download(client: Client, worker: WorkerProcess, trained_model: str,
                                          tmp_path: Path) -> None:
    done = atelier("submit", "generate_images", "--prompt", "a bag", "-n", "3", "--seed", "5", "--model",
                   trained_model, "--wait", "--json", url=client.base)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded" and len(job["output"]["images"]) == 3
    assert "100%" in done.stderr  # the progress bar
    status = atelier("status", job["id"], url=client.base)
    assert status.returncode == 0 and f"{job['id']}  generate_images  succeeded  100%" in status.stdout
    listed = atelier("list", "--type", "generate_images", "--limit", "50", url=client.base)
    assert job["id"] in listed.stdout
    fetched = atelier("download", job["id"], "-o", str(tmp_path), url=client.base)
    assert fetched.returncode == 0, fetched.stderr
    folder = tmp_path / job["id"]
    pngs = sorted((folder / "images").glob("*.png"))
    assert len(pngs) == 3 and Image.open(pngs[0]).size == (28, 28)
    assert json.loads((folder / "job.json").read_text())["id"] == job["id"]
    models = atelier("models", "--family", "cvae", url=client.base)
    assert trained_model in models.stdout
    # a finished job cannot be canceled: the API's reason, exit 2
    late = atelier("cancel", job["id"], url=client.base)
    assert late.returncode == 2 and "job_finished" in late.stderr


def test_input_fields_and_validation_errors(client: Client, worker: WorkerProcess, trained_model: str) -> None:
    bad = atelier("submit", "generate_images", "--prompt", "a bag", "-n", "500", url=client.base)
    assert bad.returncode == 2 and "input.n" in bad.stderr
    # --steps/--guidance travel as input.sampling; a cvae does not read them, and says which field
    unread = atelier("submit", "generate_images", "--prompt", "a bag", "-m", trained_model, "--guidance", "3",
                     url=client.base)
    assert unread.returncode == 2 and "input.sampling.guidance" in unread.stderr, unread.stderr
    job = atelier("submit", "generate_images", "-s", 'conditions={"class": "Bag"}', "-s", "n=2", "-m",
                  trained_model, "--json", url=client.base)
    assert job.returncode == 0, job.stderr
    job_id = json.loads(job.stdout)["id"]
    waited = atelier("wait", job_id, "--timeout", "120", url=client.base)
    assert waited.returncode == 0 and "succeeded" in waited.stdout


def test_unreachable_service_and_wrong_key_say_what_to_do(env: dict[str, str]) -> None:
    down = atelier("list", url=f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 3 and "cannot reach Atelier" in down.stderr and "ATELIER_URL" in down.stderr
    assert "Traceback" not in down.stderr
    keyed = ApiServer(settings_from(on_redis_db(env, 8, ATELIER_API_KEYS=json.dumps(
        [{"name": "cli", "sha256": hash_key("atl_right")}])))).start()
    try:
        missing = atelier("list", url=keyed.url)
        assert missing.returncode == 4 and "ATELIER_API_KEY" in missing.stderr
        wrong = atelier("list", url=keyed.url, key="atl_wrong")
        assert wrong.returncode == 4 and "invalid_api_key" in wrong.stderr
        assert atelier("list", url=keyed.url, key="atl_right").returncode == 0
    finally:
        keyed.stop()


def test_keygen_makes_an_entry_the_service_accepts() -> None:
    out = atelier("keygen", "--name", "studio", "--max-queued", "5", url="http://unused")
    assert out.returncode == 0
    key = out.stdout.split("it is not stored anywhere): ")[1].split()[0]
    entry = json.loads(out.stdout.split("ATELIER_API_KEYS: ")[1])
    assert entry == {"name": "studio", "sha256": hash_key(key), "max_queued": 5}

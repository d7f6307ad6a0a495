"""The whole path over real HTTP: API -> Valkey -> Celery worker -> torch -> SeaweedFS -> API."""

from __future__ import annotations

import io
import time
import uuid
import zipfile

import pytest
import requests
from PIL import Image

from shared.storage import Storage
from tests.support import Client

pytestmark = pytest.mark.e2e


def generate(client: Client, **job_input: object) -> dict:
    job = client.submit("generate_images", job_input, headers={"Prefer": "wait=60"}, expect=(200, 202))
    done = client.wait(job["id"])
    assert done["status"] == "succeeded", done
    return done


def test_trained_model_is_listed_with_its_artifacts(client: Client, trained_model: str) -> None:
    models = client.http.get(f"{client.base}/v1/models", timeout=10).json()["models"]
    model = next(m for m in models if m["ref"] == trained_model)
    assert model["dataset"] == "fashion-mnist" and model["vocabulary"]["class"][3] == "Dress"
    assert model["metrics"]["test_loss"] > 0 and model["metrics"]["epochs"] == 1
    train_job = client.get(model["job_id"])
    artifacts = train_job["output"]["artifacts"]
    curve = Image.open(io.BytesIO(client.download(artifacts["loss_curve"]["url"])))
    assert curve.format == "PNG" and curve.size[0] > 200
    assert len(artifacts["class_samples"]) == 10
    Image.open(io.BytesIO(client.download(artifacts["class_samples"][3]["url"]))).verify()
    assert train_job["model"] == trained_model and train_job["progress"]["fraction"] == 1.0
    # no classifier has been trained on fashion-mnist here: the version says so instead of a score
    assert "family classifier" in train_job["output"]["evaluation"]["skipped"]


def test_generate_images_end_to_end(client: Client, trained_model: str, storage: Storage) -> None:
    done = generate(client, conditions={"class": "Dress"}, n=6, seed=11, family="cvae")
    output = done["output"]
    assert done["model"] == trained_model and output["conditions"] == {"class": "Dress"}
    assert [img["seed"] for img in output["images"]] == [11, 12, 13, 14, 15, 16]
    assert "classifier" not in output and "confidence" not in output["images"][0]  # none trained on fashion-mnist
    pngs = [client.download(img["url"]) for img in output["images"]]
    for data in pngs:
        image = Image.open(io.BytesIO(data))
        assert image.format == "PNG" and image.size == (28, 28) and image.mode == "L"
    assert len(set(pngs)) == 6  # different seeds, different images
    sheet = Image.open(io.BytesIO(client.download(output["contact_sheet"]["url"])))
    assert sheet.size[0] > 28 * 6
    manifest = storage.get_json(output["manifest"]["key"])
    assert manifest["model"] == trained_model and manifest["seeds"]["per_image"] == [11, 12, 13, 14, 15, 16]
    assert {output["images_archive"]["key"], output["contact_sheet"]["key"]} <= set(manifest["objects"])
    assert manifest["input"]["n"] == 6
    # each image's URL is its byte range of the one archive, signed: no key needed, tampering refused
    archive = zipfile.ZipFile(io.BytesIO(client.download(output["images_archive"]["url"])))
    assert [archive.read(f"{i:03d}.png") for i in range(6)] == pngs
    url = output["images"][0]["url"]
    assert "/files/jobs/" in url and requests.get(url, timeout=10).status_code == 200
    tampered = requests.get(url.replace("images/0.png", "images/1.png"), timeout=10)
    assert tampered.status_code == 403 and tampered.json()["error"]["field"] == "signature"
    unsigned = requests.get(url.split("?")[0], timeout=10)
    assert unsigned.status_code == 403 and unsigned.json()["error"]["field"] == "signature"

    again = generate(client, conditions={"class": 3}, n=6, seed=11, model=trained_model)
    assert [client.download(img["url"]) for img in again["output"]["images"]] == pngs  # byte-identical
    other = generate(client, conditions={"class": "dress"}, n=1, seed=99, family="cvae")
    assert client.download(other["output"]["images"][0]["url"]) not in pngs


def test_unknown_class_is_rejected_at_submit(client: Client, trained_model: str) -> None:
    response = client.http.post(f"{client.base}/v1/jobs", json={
        "type": "generate_images", "input": {"conditions": {"class": "Jumpsuit"}, "family": "cvae"}}, timeout=10)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "input.conditions.class" and "Ankle boot" in error["message"]
    response = client.http.post(f"{client.base}/v1/jobs", json={
        "type": "generate_images", "input": {"conditions": {"colour": "Black"}, "family": "cvae"}}, timeout=10)
    assert response.status_code == 422 and response.json()["error"]["field"] == "input.conditions.colour"


def test_idempotent_submit(client: Client, trained_model: str) -> None:
    key = {"Idempotency-Key": f"retry-{uuid.uuid4()}"}
    body = {"conditions": {"class": "Bag"}, "n": 2, "family": "cvae"}
    first = client.submit("generate_images", body, headers=key, expect=202)
    response = client.http.post(f"{client.base}/v1/jobs", json={"type": "generate_images", "input": body},
                                headers=key, timeout=10)
    assert response.status_code == 200 and response.json()["id"] == first["id"]
    assert response.headers["Idempotent-Replayed"] == "true"
    assert response.json()["input"]["seed"] == first["input"]["seed"]  # the random seed was kept
    clash = client.http.post(f"{client.base}/v1/jobs", json={"type": "generate_images", "input": {**body, "n": 3}},
                             headers=key, timeout=10)
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "idempotency_key_reused"
    assert client.wait(first["id"])["status"] == "succeeded"


def test_list_jobs_over_http(client: Client, trained_model: str) -> None:
    generate(client, conditions={"class": 0}, n=1, seed=1, family="cvae")
    listing = client.http.get(f"{client.base}/v1/jobs", params={"type": "generate_images", "limit": 2},
                              timeout=10).json()
    assert len(listing["jobs"]) == 2 and listing["next_cursor"]
    assert all(j["type"] == "generate_images" for j in listing["jobs"])
    created = [j["created_at"] for j in listing["jobs"]]
    assert created == sorted(created, reverse=True)
    more = client.http.get(f"{client.base}/v1/jobs", params={"type": "generate_images", "limit": 2,
                                                             "cursor": listing["next_cursor"]}, timeout=10).json()
    assert not {j["id"] for j in more["jobs"]} & {j["id"] for j in listing["jobs"]}
    trains = client.http.get(f"{client.base}/v1/jobs", params={"type": "train", "status": "succeeded"},
                             timeout=10).json()["jobs"]
    assert any(j["model"] == trained_model for j in trains)


def test_cancel_queued_and_running(client: Client, trained_model: str, storage: Storage) -> None:
    long = client.submit("train", {"family": "cvae", "dataset": "fashion-mnist", "preset": "tiny", "epochs": 300,
                                   "max_train_examples": 60000, "promote": "never"})
    client.wait_for(long["id"], lambda j: j["status"] == "running" and "epoch 2/" in j["progress"]["message"],
                    timeout=120)
    assert storage.exists(f"jobs/{long['id']}/checkpoint.pt")  # the first epoch's resume point
    # The only worker slot is busy, so this one waits in the queue.
    queued = client.submit("generate_images", {"conditions": {"class": 1}, "n": 1, "family": "cvae"})
    response = client.http.post(f"{client.base}/v1/jobs/{queued['id']}/cancel", timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "canceled"

    started = time.monotonic()
    response = client.http.post(f"{client.base}/v1/jobs/{long['id']}/cancel", timeout=10)
    assert response.status_code == 202 and response.json()["cancel_requested"]
    ended = client.wait(long["id"], timeout=30)
    assert ended["status"] == "canceled" and time.monotonic() - started < 15
    assert not storage.exists(f"jobs/{long['id']}/checkpoint.pt")  # a canceled training will not resume
    assert ended["output"] is None and ended["model"]  # the version it would have made is not registered
    models = client.http.get(f"{client.base}/v1/models", timeout=10).json()["models"]
    assert ended["model"] not in {m["ref"] for m in models}

    time.sleep(1.0)  # the queued job's message has now reached the worker: it must not run
    assert client.get(queued["id"])["status"] == "canceled" and client.get(queued["id"])["attempts"] == 0
    again = client.http.post(f"{client.base}/v1/jobs/{long['id']}/cancel", timeout=10)
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"


def test_activate_another_version(client: Client, trained_model: str) -> None:
    family, version = trained_model.split("@")
    response = client.http.post(f"{client.base}/v1/models/{family}/{version}/activate", timeout=10)
    assert response.status_code == 200 and response.json()["active"] is True


def test_queued_generate_jobs_for_one_model_share_a_forward_pass(client: Client, trained_model: str) -> None:
    """Batching across jobs: while the only worker slot is busy, three generate jobs for one model
    queue up; the first to run samples for all three in one forward pass, each gets the images it
    gets alone, byte for byte, and a dry run (which samples nothing) is left to run by itself."""
    wanted = [{"conditions": {"class": "Dress"}, "n": 3, "seed": 5},
              {"conditions": {"class": "Bag"}, "n": 2, "seed": 9}, {"prompt": "sandal", "n": 4, "seed": 1}]
    with client.worker_busy():
        jobs = [client.submit("generate_images", {**r, "model": trained_model}) for r in wanted]
        dry = client.submit("generate_images", {"conditions": {"class": "Bag"}, "dry_run": True,
                                                "model": trained_model})
    done = [client.wait(job["id"]) for job in jobs]
    assert all(d["status"] == "succeeded" and d["attempts"] == 1 for d in done), done
    batch = {"leader": jobs[0]["id"], "jobs": 3, "images": 9}
    assert [d["output"].get("batch") for d in done] == [batch, batch, batch]
    assert "batch" not in client.wait(dry["id"])["output"]
    for request, batched in zip(wanted, done, strict=True):
        alone = generate(client, **request, model=trained_model)  # the worker is idle now: nobody to batch with
        assert "batch" not in alone["output"] and alone["output"]["conditions"] == batched["output"]["conditions"]
        assert ([client.download(i["url"]) for i in alone["output"]["images"]]
                == [client.download(i["url"]) for i in batched["output"]["images"]])

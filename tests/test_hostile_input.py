"""Hostile input over HTTP: zip-slip names and a decompression bomb in a catalog upload, oversized
uploads, huge prompts, control characters and emoji, numbers out of any range, NaN, and path tricks
in URLs. Always a 4xx naming the field, or a job that ends with a reason; never a 5xx."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.support import ApiServer, Client, WorkerProcess, on_redis_db, settings_from

pytestmark = pytest.mark.e2e


def jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (60, 80), colour).save(buffer, "JPEG")
    return buffer.getvalue()


def bomb_png() -> bytes:
    """A 30,000 × 30,000 PNG (900 M pixels, 2.7 GB decoded) that compresses to well under 1 MB."""
    buffer = io.BytesIO()
    Image.new("1", (30_000, 30_000)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def test_zip_slip_names_and_a_decompression_bomb_in_an_upload(client: Client, worker: WorkerProcess,
                                                              var_dir: Path, tmp_path: Path) -> None:
    rows = ["id,articleType,baseColour,productDisplayName"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(12):
            rows.append(f"{i},Tops,Red,Top {i}")
            # entries that climb out of any folder they would be unpacked into
            name = {0: "../../../../tmp/atelier-zip-slip/0.jpg", 1: "/etc/atelier-abs/1.jpg"}.get(i, f"p/{i}.jpg")
            zf.writestr(name, jpeg((200, 10 * i, 30)))
        rows.append("12,Tops,Red,Bomb")
        zf.writestr("p/12.png", bomb_png())
        # a bzip2 member: zipfile would hand over its whole output at once, so it is never read
        rows.append("13,Tops,Red,Bzip2")
        zf.writestr("p/13.jpg", jpeg((0, 0, 0)), compress_type=zipfile.ZIP_BZIP2)
    files = {"csv_file": ("c.csv", "\n".join(rows).encode(), "text/csv"),
             "images": ("i.zip", archive.getvalue(), "application/zip")}
    response = client.http.post(f"{client.base}/v1/datasets", data={"name": "hostile-upload"}, files=files,
                                timeout=30)
    assert response.status_code == 202, response.text
    done = client.wait(response.json()["id"], timeout=120)
    assert done["status"] == "succeeded", (done, worker.tail())
    # images are read from the zip by id, never unpacked: the climbing names are just names
    assert done["output"]["skipped"] == {"unreadable_image": 2}  # the bombs, refused before decoding
    assert done["output"]["sizes"]["train"] + done["output"]["sizes"]["test"] == 12
    assert not Path("/tmp/atelier-zip-slip").exists() and not Path("/etc/atelier-abs").exists()


def test_uploads_over_the_limit_are_413(env: dict[str, str]) -> None:
    small = ApiServer(settings_from(on_redis_db(env, 9, ATELIER_MAX_UPLOAD_BYTES="100000"))).start()
    try:
        files = {"csv_file": ("c.csv", b"id,articleType,baseColour,productDisplayName\n", "text/csv"),
                 "images": ("i.zip", b"\0" * 200_000, "application/zip")}
        response = requests.post(f"{small.url}/v1/datasets", data={"name": "too-big"}, files=files, timeout=30)
        assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    finally:
        small.stop()


@pytest.mark.parametrize(("job_input", "field"), [
    ({"prompt": "dress " * 20_000, "n": 1}, "input.prompt"),  # a 120 KB prompt
    ({"prompt": "dress", "n": -1}, "input.n"),
    ({"prompt": "dress", "n": 10 ** 30}, "input.n"),
    ({"prompt": "dress", "seed": -5}, "input.seed"),
    ({"prompt": "dress", "seed": 2 ** 70}, "input.seed"),
    ({"prompt": "dress", "temperature": 1e308}, "input.temperature"),
    ({"prompt": "dress", "n": 3.5}, "input.n"),
    ({"prompt": "dress", "n": "4"}, "input.n"),
    ({"prompt": "", "n": 1}, "input.prompt"),
])
def test_out_of_range_input_names_the_field(client: Client, job_input: dict, field: str) -> None:
    response = client.http.post(f"{client.base}/v1/jobs", json={"type": "generate_images", "input": job_input},
                                timeout=30)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_json_numbers_are_refused(client: Client, literal: str) -> None:
    body = '{"type": "generate_images", "input": {"prompt": "dress", "temperature": ' + literal + "}}"
    response = client.http.post(f"{client.base}/v1/jobs", data=body, timeout=30,
                                headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["field"] in ("body", "input.temperature")


@pytest.mark.parametrize("prompt", ["black 👗 dress 🔥", "dress\u0000\u0007\u202e\u200b", "ドレス",
                                    "dress' OR 1=1; --", "<script>alert(1)</script> dress", "d\tr\ne\rss"])
def test_control_characters_and_emoji_in_prompts(client: Client, trained_model: str, prompt: str) -> None:
    response = client.http.post(f"{client.base}/v1/jobs", timeout=30, headers={"Prefer": "wait=30"}, json={
        "type": "generate_images", "input": {"prompt": prompt, "n": 1, "model": trained_model}})
    assert response.status_code in (200, 202, 422), response.text
    if response.status_code == 422:
        assert response.json()["error"]["field"].startswith("input")
        return
    job = client.wait(response.json()["id"], timeout=60)
    assert job["status"] in ("succeeded", "failed"), job
    if job["status"] == "failed":  # a reason the merchandiser can act on, not a crash
        assert job["error"]["code"] == "prompt_not_understood", job["error"]
    else:
        assert job["output"]["interpreted"]["class"]["value"]  # read as some class, said with its confidence
        assert len(job["output"]["images"]) == 1


def test_console_escapes_what_users_typed(client: Client, trained_model: str) -> None:
    job = client.submit("generate_images", {"prompt": "<img src=x onerror=alert(1)> dress", "n": 1,
                                            "model": trained_model, "allow_approximate": True})
    page = requests.get(f"{client.base}/jobs/{job['id']}", timeout=30).text
    assert "<img src=x onerror" not in page and "&lt;img src=x onerror" in page


@pytest.mark.parametrize("path", ["/v1/jobs/..%2F..%2Fetc%2Fpasswd", "/v1/jobs/%00", "/v1/datasets/..%2Fmodels",
                                  "/v1/jobs/" + "a" * 5000, "/v1/jobs/x/archive", "/jobs/..%2F..%2Fv1%2Fjobs"])
def test_path_tricks_are_4xx(client: Client, path: str) -> None:
    response = requests.get(client.base + path, timeout=30)
    assert 400 <= response.status_code < 500, (path, response.status_code, response.text[:200])


def test_invalid_json_shapes(client: Client) -> None:
    for body in ('{"type": "train", "input": ' + "[" * 100_000 + "]" * 100_000 + "}", '{"a": 1, "a": 2}', "[]",
                 json.dumps({"type": "train", "input": {"family": "cvae", "dataset": "x" * 10_000}})):
        response = client.http.post(f"{client.base}/v1/jobs", data=body, timeout=30,
                                    headers={"Content-Type": "application/json"})
        assert 400 <= response.status_code < 500, (body[:40], response.status_code, response.text[:200])

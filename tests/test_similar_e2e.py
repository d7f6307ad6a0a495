"""Visual search over real HTTP and the CLI: by catalog item and by photo, against the tiny
classifier trained on the catalog slice (its train job built the feature index), with the errors a
merchandiser can cause named by field."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from shared.storage import Storage
from tests.support import Client
from tests.test_cli import atelier
from worker.datasets.catalog import DEMO_FOLDER, ImageSource

pytestmark = pytest.mark.e2e
FIELDS = {"id", "title", "similarity", "split", "articleType", "baseColour", "photo"}


@pytest.fixture(scope="module")
def slice_items(storage: Storage, catalog_classifier: dict) -> list[dict]:
    return storage.get_json("datasets/catalog-slice/index.json")


def photo_b64(catalog_available: Path, item_id: str) -> str:
    source = ImageSource(catalog_available / DEMO_FOLDER / "images.zip")
    try:
        return base64.b64encode(source.read(item_id)).decode()
    finally:
        source.close()


def search(client: Client, job_input: dict) -> dict:
    job = client.submit("similar", job_input, headers={"Prefer": "wait=30"}, expect=(200, 202))
    return client.wait(job["id"], timeout=120)


def test_similar_to_a_catalog_item(client: Client, catalog_classifier: dict, slice_items: list[dict]) -> None:
    item = next(i for i in slice_items if i["type"] == "Tshirts")
    done = search(client, {"item": item["id"], "k": 4, "classifier": catalog_classifier["model"]})
    assert done["status"] == "succeeded", done
    out = done["output"]
    assert out["classifier"] == catalog_classifier["model"] and out["dataset"] == "catalog-slice"
    assert out["query"]["item"] == item["id"] and out["query"]["articleType"] == "Tshirts"
    neighbours = out["neighbours"]
    assert len(neighbours) == 4 and item["id"] not in {n["id"] for n in neighbours}  # not itself
    assert all(FIELDS <= set(n) for n in neighbours)
    sims = [n["similarity"] for n in neighbours]
    assert sims == sorted(sims, reverse=True) and all(-1 <= s <= 1 for s in sims)
    photo = Image.open(io.BytesIO(client.download(neighbours[0]["photo"]["url"])))
    assert photo.size == (64, 64)
    for head in ("articleType", "baseColour"):
        guess = out["predicted"][head]
        assert 0 <= guess["confidence"] <= 1 and guess["value"] == guess["top"][0]["value"]


def test_a_catalog_photo_finds_itself_first(client: Client, catalog_classifier: dict, slice_items: list[dict],
                                            catalog_available: Path) -> None:
    item = next(i for i in slice_items if i["type"] == "Handbags")
    done = search(client, {"image": photo_b64(catalog_available, item["id"]), "k": 3,
                           "classifier": catalog_classifier["model"]})
    assert done["status"] == "succeeded", done
    first = done["output"]["neighbours"][0]
    assert first["id"] == item["id"] and first["similarity"] > 0.999, done["output"]["neighbours"]
    assert done["output"]["query"]["photo"]["url"]


def test_queued_searches_share_a_forward_pass(client: Client, catalog_classifier: dict, slice_items: list[dict],
                                             catalog_available: Path, fashion_mnist_available: Path) -> None:
    """Batching across jobs: searches queued behind a busy worker are read in one classifier pass,
    each answer exactly the one it gets alone; a search that fails reading its query fails alone."""
    ref = catalog_classifier["model"]
    items = [i["id"] for i in slice_items[:2]]
    wanted = [{"item": items[0], "k": 3}, {"image": photo_b64(catalog_available, items[1]), "k": 5},
              {"item": items[1], "k": 2}]
    with client.worker_busy():
        jobs = [client.submit("similar", {**r, "classifier": ref}) for r in wanted]
        missing = client.submit("similar", {"item": "999999999", "classifier": ref})
    done = [client.wait(job["id"]) for job in jobs]
    assert all(d["status"] == "succeeded" and d["attempts"] == 1 for d in done), done
    batch = {"leader": jobs[0]["id"], "jobs": 3}
    assert [d["output"].get("batch") for d in done] == [batch, batch, batch]
    assert client.wait(missing["id"])["error"]["code"] == "item_not_found"

    def answer(output: dict) -> tuple:
        return output["predicted"], [(n["id"], n["similarity"]) for n in output["neighbours"]]

    for request, batched in zip(wanted, done, strict=True):
        alone = search(client, {**request, "classifier": ref})  # the worker is idle now: nobody to batch with
        assert "batch" not in alone["output"] and answer(alone["output"]) == answer(batched["output"])


@pytest.mark.parametrize(("job_input", "field"), [
    ({"image": "not base64 at all!"}, "input.image"),
    ({"image": base64.b64encode(b"GIF89a" + b"\0" * 64).decode()}, "input.image"),  # only JPEG and PNG
    ({"image": base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode()}, "input.image"),  # truncated
    ({"item": "1", "image": "aGVsbG8="}, "input.item"),  # exactly one of the two
    ({}, "input.item"),
    ({"item": "1", "k": 0}, "input.k"),
    ({"item": "1", "k": 51}, "input.k"),
    ({"item": "../../etc"}, "input.item"),
])
def test_bad_queries_are_422_naming_the_field(client: Client, catalog_classifier: dict, job_input: dict,
                                              field: str) -> None:
    response = client.http.post(f"{client.base}/v1/jobs", timeout=10, json={
        "type": "similar", "input": {"classifier": catalog_classifier["model"], **job_input}})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


def test_a_gif_renamed_and_a_huge_image_are_refused(client: Client, catalog_classifier: dict) -> None:
    gif = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(gif, format="GIF")
    huge = io.BytesIO()
    Image.new("L", (5000, 5000)).save(huge, format="PNG")  # small file, 25 M pixels
    for data in (gif.getvalue(), huge.getvalue()):
        response = client.http.post(f"{client.base}/v1/jobs", timeout=10, json={
            "type": "similar", "input": {"classifier": catalog_classifier["model"],
                                         "image": base64.b64encode(data).decode()}})
        assert response.status_code == 422 and response.json()["error"]["field"] == "input.image", response.text


def test_unknown_item_fails_naming_the_field_and_other_families_are_refused(
        client: Client, catalog_classifier: dict, catalog_models: dict) -> None:
    done = search(client, {"item": "no-such-item", "classifier": catalog_classifier["model"]})
    assert done["status"] == "failed" and done["error"]["field"] == "input.item", done
    assert done["error"]["code"] == "item_not_found"
    response = client.http.post(f"{client.base}/v1/jobs", timeout=10, json={
        "type": "similar", "input": {"classifier": catalog_models["cgan"], "item": "1"}})
    assert response.status_code == 422 and response.json()["error"]["field"] == "input.classifier"
    response = client.http.post(f"{client.base}/v1/jobs", timeout=10, json={
        "type": "similar", "input": {"classifier": catalog_classifier["model"], "item": "1", "dataset": "nowhere"}})
    assert response.status_code == 422 and response.json()["error"]["code"] == "index_not_built"


def test_cli_similar_by_item_and_by_photo(client: Client, catalog_classifier: dict, slice_items: list[dict],
                                          catalog_available: Path, tmp_path: Path) -> None:
    item = next(i for i in slice_items if i["type"] == "Casual Shoes")
    by_item = atelier("similar", "--item", item["id"], "-k", "3", "--classifier", catalog_classifier["model"],
                      url=client.base)
    assert by_item.returncode == 0, by_item.stderr
    lines = by_item.stdout.splitlines()
    assert lines[0].startswith("articleType: ") and len(lines) == 2 + 3
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(base64.b64decode(photo_b64(catalog_available, item["id"])))
    by_photo = atelier("similar", "--image", str(photo), "--classifier", catalog_classifier["model"], "--json",
                       url=client.base)
    assert by_photo.returncode == 0, by_photo.stderr
    assert json.loads(by_photo.stdout)["output"]["neighbours"][0]["id"] == item["id"]
    neither = atelier("similar", url=client.base)
    assert neither.returncode == 2 and "exactly one" in neither.stderr

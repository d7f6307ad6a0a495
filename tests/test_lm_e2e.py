"""The description model trained over HTTP on the Myntra demo copy (tiny preset: seconds)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from tests.support import Client

pytestmark = pytest.mark.e2e


def test_train_the_description_model(client: Client, worker, catalog_available: Path) -> None:
    if not (catalog_available / "myntra-products-catalog").is_dir():
        pytest.skip("ATELIER_DATASETS/myntra-products-catalog is not available")
    job = client.submit("train", {"family": "lm", "dataset": "descriptions", "preset": "tiny", "seed": 2})
    done = client.wait(job["id"], timeout=300)
    assert done["status"] == "succeeded", (done, worker.tail())
    output = done["output"]
    assert output["model"].startswith("lm@") and output["metrics"]["epochs"] == 1
    assert 1 < output["metrics"]["test_perplexity"] < 10_000
    assert len(output["samples"]) == 6 and all(s["generated"] for s in output["samples"])
    curve = Image.open(io.BytesIO(client.download(output["artifacts"]["loss_curve"]["url"])))
    assert curve.format == "PNG"
    models = client.http.get(f"{client.base}/v1/models?family=lm", timeout=10).json()["models"]
    assert [m["ref"] for m in models] == [output["model"]] and models[0]["vocabulary"] == {}

    # a text model is not an image model, and image datasets do not train it
    refused = client.http.post(f"{client.base}/v1/jobs", json={"type": "generate_images", "input": {
        "prompt": "black jumpsuit", "model": output["model"]}}, timeout=10)
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "input.model"
    wrong = client.http.post(f"{client.base}/v1/jobs", json={"type": "train", "input": {
        "family": "lm", "dataset": "catalog"}}, timeout=10)
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "wrong_dataset_format"

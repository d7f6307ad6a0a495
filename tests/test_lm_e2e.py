"""The description model over HTTP: trained on the Myntra demo copy (tiny preset: seconds), then
`describe` jobs and images with descriptions."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from shared.settings import Settings
from tests.support import Client
from tests.test_lm import save_small_base

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def trained_lm(client: Client, worker, catalog_available: Path) -> dict:
    if not (catalog_available / "myntra-products-catalog").is_dir():
        pytest.skip("ATELIER_DATASETS/myntra-products-catalog is not available")
    job = client.submit("train", {"family": "lm", "dataset": "descriptions", "preset": "tiny", "seed": 2})
    done = client.wait(job["id"], timeout=300)
    assert done["status"] == "succeeded", (done, worker.tail())
    return done["output"]


def test_train_the_description_model(client: Client, trained_lm: dict) -> None:
    output = trained_lm
    assert output["model"].startswith("lm@") and output["metrics"]["epochs"] == 1
    assert output["active"] and "first version" in output["promotion"]["reason"]
    assert 1 < output["metrics"]["test_perplexity"] < 10_000
    assert len(output["samples"]) == 6 and all(s["generated"] for s in output["samples"])
    curve = Image.open(io.BytesIO(client.download(output["artifacts"]["loss_curve"]["url"])))
    assert curve.format == "PNG"
    models = client.http.get(f"{client.base}/v1/models?family=lm", timeout=10).json()["models"]
    assert [m["ref"] for m in models] == [output["model"]] and models[0]["vocabulary"] == {}

    # a text model is not an image model, and image datasets do not train it
    refused = client.submit("generate_images", {"prompt": "black jumpsuit", "model": output["model"]}, expect=422)
    assert refused["error"]["field"] == "input.model"
    wrong = client.submit("train", {"family": "lm", "dataset": "catalog"}, expect=422)
    assert wrong["error"]["code"] == "wrong_dataset_format"

    # a pretrained base is only for lm, and must exist under ATELIER_BASE_MODELS
    base_on_cvae = client.submit("train", {"family": "cvae", "dataset": "fashion-mnist", "base_model": "gpt2"},
                                 expect=422)
    assert base_on_cvae["error"]["field"] == "input.base_model"
    outside = client.submit("train", {"family": "lm", "dataset": "descriptions", "base_model": "../etc"}, expect=422)
    assert outside["error"]["field"] == "input.base_model"
    missing = client.wait(client.submit("train", {"family": "lm", "dataset": "descriptions", "preset": "tiny",
                                                  "base_model": "no-such-base"})["id"], timeout=60)
    assert missing["status"] == "failed" and missing["error"]["code"] == "base_model_not_found"
    assert missing["error"]["field"] == "input.base_model"


def test_fine_tune_a_local_base_then_describe_with_it(client: Client, trained_lm: dict, settings: Settings) -> None:
    """The fine-tuning path end to end: a GPT-2 saved under ATELIER_BASE_MODELS, trained over HTTP
    (offline), and the version it makes writes copy."""
    save_small_base(settings.base_models_dir / "small-gpt2")
    done = client.wait(client.submit("train", {"family": "lm", "dataset": "descriptions", "preset": "tiny",
                                               "base_model": "small-gpt2", "seed": 3, "promote": "never"})["id"],
                       timeout=300)
    assert done["status"] == "succeeded", done
    assert done["output"]["metrics"]["base_model"] == "small-gpt2"
    assert 1 < done["output"]["metrics"]["test_perplexity"] < 10_000
    described = client.wait(client.submit("describe", {"prompt": "white sneakers", "n": 2, "max_tokens": 20,
                                                       "model": done["output"]["model"]})["id"], timeout=120)
    assert described["status"] == "succeeded", described
    assert described["output"]["model"] == done["output"]["model"] and len(described["output"]["descriptions"]) == 2


def test_describe_a_prompt(client: Client, trained_lm: dict) -> None:
    request = {"prompt": "black short sleeve jumpsuit for women", "n": 4, "seed": 11, "max_tokens": 40}
    done = client.wait(client.submit("describe", request)["id"], timeout=120)
    assert done["status"] == "succeeded", done
    out = done["output"]
    assert out["model"] == trained_lm["model"]
    assert out["requested"] == {"type": "Jumpsuit", "colour": "Black", "details": ["short sleeves"]}
    assert out["context"] == "Women Black Short Sleeve Jumpsuit"
    assert out["opening"] == "Black jumpsuit, has short sleeves"
    assert all(d["text"].startswith(out["opening"]) for d in out["descriptions"])
    assert out["interpreted"]["unmapped"] == ["short sleeve", "women"]
    ranked = out["descriptions"]
    assert [d["rank"] for d in ranked] == [1, 2, 3, 4] and sorted(d["seed"] for d in ranked) == [11, 12, 13, 14]
    for d in ranked:
        assert d["text"] and -1 <= d["similarity"] <= 1 and 0 <= d["adherence"]["score"] <= 1
        assert set(d["adherence"]["present"]) == {"colour", "type", "detail:short sleeves"}
        assert isinstance(d["copy"]["flagged"], bool)
    keys = [(d["copy"]["flagged"], -d["adherence"]["score"], -d["similarity"]) for d in ranked]
    assert keys == sorted(keys)  # best first
    assert out["summary"]["n"] == 4
    stored = client.download(out["file"]["url"])
    assert b'"rank": 1' in stored or b'"rank":1' in stored

    # the same seed gives the same copy; one seed alone gives that seed's text from the batch
    again = client.wait(client.submit("describe", request)["id"], timeout=120)["output"]["descriptions"]
    assert [(d["seed"], d["text"]) for d in again] == [(d["seed"], d["text"]) for d in ranked]
    single = client.wait(client.submit("describe", {**request, "n": 1, "seed": 13})["id"], timeout=120)
    assert single["output"]["descriptions"][0]["text"] == next(d["text"] for d in ranked if d["seed"] == 13)


def test_queued_describe_jobs_share_a_pass(client: Client, trained_lm: dict, fashion_mnist_available: Path) -> None:
    """Batching across jobs: describe jobs queued behind a busy worker, for one model with the same
    sampling settings and prompts as long in tokens, are written in one pass, each job's copy the copy
    it gets alone; other settings, or a prompt of another length, are written alone."""
    same = {"prompt": "black short sleeve jumpsuit for women", "max_tokens": 24}
    wanted = [{**same, "n": 2, "seed": 3}, {**same, "n": 3, "seed": 40},
              {**same, "n": 1, "seed": 3, "temperature": 0.5},
              {"prompt": "navy blue printed kurta with three-quarter sleeves and a mandarin collar", "n": 2,
               "seed": 3, "max_tokens": 24}]
    with client.worker_busy():
        jobs = [client.submit("describe", r) for r in wanted]
    done = [client.wait(job["id"]) for job in jobs]
    assert all(d["status"] == "succeeded" and d["attempts"] == 1 for d in done), done
    batch = {"leader": jobs[0]["id"], "jobs": 2, "descriptions": 5}
    assert [d["output"].get("batch") for d in done] == [batch, batch, None, None]
    for request, batched in zip(wanted, done, strict=True):
        alone = client.wait(client.submit("describe", request)["id"], timeout=120)["output"]
        assert "batch" not in alone
        assert alone["descriptions"] == batched["output"]["descriptions"]


def test_describe_attributes_and_bad_input(client: Client, trained_lm: dict) -> None:
    done = client.wait(client.submit("describe", {"attributes": {
        "type": "kurta", "colour": "navy", "details": ["three-quarter sleeves"], "gender": "Women"},
        "n": 2, "seed": 1, "temperature": 0})["id"], timeout=120)
    assert done["status"] == "succeeded", done
    out = done["output"]
    assert out["context"] == "Women Navy Three-quarter Sleeves Kurta"
    assert out["requested"] == {"type": "Kurtas", "colour": "Navy Blue", "details": ["three-quarter sleeves"]}
    assert out["descriptions"][0]["text"] == out["descriptions"][1]["text"]  # greedy: seeds do not matter
    free = client.wait(client.submit("describe", {"prompt": "navy kurta", "n": 2, "opening": "free",
                                                  "max_tokens": 20})["id"], timeout=120)["output"]
    assert free["opening"] == "" and free["requested"]["colour"] == "Navy Blue"

    def refused(job_input: dict) -> dict:
        return client.submit("describe", job_input, expect=(404, 422))["error"]

    assert refused({"prompt": "black dress", "n": 17})["field"] == "input.n"
    assert refused({"prompt": "black dress", "attributes": {"type": "dress"}})["field"] == "input.prompt"
    assert refused({"attributes": {"brand": "Roadster"}})["field"].startswith("input.attributes")
    assert refused({"prompt": "black dress", "top_p": 0})["field"] == "input.top_p"
    assert refused({"prompt": "black dress", "model": "lm@v999"})["code"] == "model_not_found"


def test_images_with_descriptions(client: Client, trained_lm: dict, catalog_models: dict[str, str]) -> None:
    done = client.wait(client.submit("generate_images", {
        "prompt": "black jumpsuit with short sleeves", "model": catalog_models["cvae"], "n": 3, "descriptions": 2,
        "seed": 5})["id"], timeout=120)
    assert done["status"] == "succeeded", done
    out = done["output"]
    assert out["description_model"] == trained_lm["model"]
    described = [image for image in out["images"] if "description" in image]
    assert [image["index"] for image in described] == [0, 1]
    assert all(image["description"]["text"] and image["description"]["seed"] == image["seed"] for image in described)
    assert "short sleeves" in str(described[0]["description"]["adherence"]["present"])
    too_many = client.submit("generate_images", {"prompt": "black jumpsuit", "model": catalog_models["cvae"], "n": 2,
                                                 "descriptions": 3}, expect=422)
    assert too_many["error"]["field"] == "input.descriptions"

"""The catalog path over real HTTP: import a slice of the demo catalog, train tiny cvae, cgan and
diffusion models on it, and generate from free text, with hybrids and traversals."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from shared.families import DEFAULT_GENERATOR
from shared.storage import Storage
from tests.conftest import CATALOG_SLICE
from tests.support import Client
from worker.datasets.base import ImageSplit
from worker.feature_index import FeatureIndex, embed
from worker.models import classifier

pytestmark = pytest.mark.e2e


def run(client: Client, job_type: str, job_input: dict, expect_status: str = "succeeded") -> dict:
    job = client.submit(job_type, job_input, headers={"Prefer": "wait=60"}, expect=(200, 202))
    done = client.wait(job["id"], timeout=180)
    assert done["status"] == expect_status, done
    return done


def image(client: Client, ref: dict) -> Image.Image:
    return Image.open(io.BytesIO(client.download(ref["url"])))


def test_import_reports_counts_and_keeps_rare_classes(client: Client, catalog_slice: dict) -> None:
    output = catalog_slice["output"]
    assert output["dataset"] == "catalog-slice" and output["classes"] == 6
    skipped = output["skipped"]  # the rest of the catalog, counted by reason
    assert skipped["class_not_requested"] > 20_000 and skipped["outside_scope"] > 2_000
    assert output["below_minimum"]["classes"] == {}
    detail = client.http.get(f"{client.base}/v1/datasets/catalog-slice", timeout=10).json()
    counts = detail["counts"]["articleType"]
    # the rare classes stay in: 16 jumpsuits and 12 rompers, less one held out each
    assert counts["Jumpsuit"] == 15 and counts["Rompers"] == 11 and counts["Tshirts"] == 36
    assert detail["image_size"] == 64 and detail["channels"] == 3
    listed = client.http.get(f"{client.base}/v1/datasets", timeout=10).json()["datasets"]
    assert "catalog-slice" in {d["name"] for d in listed}


def test_models_list_their_vocabulary_with_counts(client: Client, catalog_models: dict[str, str]) -> None:
    models = {m["ref"]: m for m in client.http.get(f"{client.base}/v1/models", timeout=10).json()["models"]}
    for ref in catalog_models.values():
        model = models[ref]
        assert model["dataset"] == "catalog-slice" and not model["active"]
        assert "Jumpsuit" in model["vocabulary"]["articleType"] and "Black" in model["vocabulary"]["baseColour"]
        assert model["counts"]["articleType"]["Jumpsuit"] == 15
        assert model["roles"] == {"type": "articleType", "colour": "baseColour"}


def test_a_request_naming_no_model_uses_the_default_family(client: Client, catalog_models: dict[str, str]) -> None:
    """The catalog's default family (shared/families.py): its active version is pinned at submit."""
    family, version = catalog_models[DEFAULT_GENERATOR].split("@")
    activated = client.http.post(f"{client.base}/v1/models/{family}/{version}/activate", timeout=10)
    assert activated.status_code == 200 and family == "cgan"
    job = run(client, "generate_images", {"prompt": "black short sleeve jumpsuit", "dry_run": True})
    assert job["model"] == catalog_models["cgan"] and job["input"]["family"] == "cgan"


@pytest.mark.parametrize("family", ["cvae", "cgan", "diffusion"])
def test_generate_from_a_prompt(client: Client, catalog_models: dict[str, str], family: str) -> None:
    done = run(client, "generate_images", {"prompt": "black short sleeve jumpsuit", "n": 3, "seed": 5,
                                           "model": catalog_models[family]})
    output = done["output"]
    assert output["interpreted"]["articleType"]["value"] == "Jumpsuit"
    assert output["interpreted"]["baseColour"]["value"] == "Black"
    assert output["interpreted"]["unmapped"] == ["short sleeve"]
    assert output["conditions"] == {"articleType": "Jumpsuit", "baseColour": "Black"}
    for ref in output["images"]:
        img = image(client, ref)
        assert img.size == (64, 64) and img.mode == "RGB"
    # same seed, same model: the same bytes
    again = run(client, "generate_images", {"conditions": {"articleType": "Jumpsuit", "baseColour": "Black"},
                                            "n": 3, "seed": 5, "model": catalog_models[family]})
    assert [client.download(i["url"]) for i in again["output"]["images"]] == \
           [client.download(i["url"]) for i in output["images"]]


def test_dry_run_only_interprets(client: Client, catalog_models: dict[str, str], storage: Storage) -> None:
    done = run(client, "generate_images", {"prompt": "navy tee", "dry_run": True, "model": catalog_models["cvae"]})
    output = done["output"]
    assert output["dry_run"] and "images" not in output
    assert output["interpreted"]["articleType"] == {"value": "Tshirts", "confidence": 0.95, "matched": "tee",
                                                    "how": "synonym"}
    assert not list(storage.list(f"jobs/{done['id']}/images/"))


def test_prompt_not_understood_names_the_closest_classes(client: Client, catalog_models: dict[str, str]) -> None:
    done = run(client, "generate_images", {"prompt": "a spaceship", "model": catalog_models["cvae"]},
               expect_status="failed")
    error = done["error"]
    assert error["code"] == "prompt_not_understood" and error["field"] == "input.prompt"
    assert len(error["details"]["closest"]) == 3 and "closest" in error["message"]
    approx = run(client, "generate_images", {"prompt": "a spaceship", "n": 1, "allow_approximate": True,
                                             "model": catalog_models["cvae"]})
    assert approx["output"]["interpreted"]["approximate"] is True


def test_class_mean_sampling(client: Client, catalog_models: dict[str, str]) -> None:
    done = run(client, "generate_images", {"conditions": {"articleType": "Dresses", "baseColour": "Black"}, "n": 2,
                                           "sampling": {"mode": "class_mean", "spread": 0.0},
                                           "model": catalog_models["cvae"]})
    first, second = (client.download(i["url"]) for i in done["output"]["images"])
    assert first == second  # no spread: both are the class mean itself
    refused = client.http.post(f"{client.base}/v1/jobs", json={"type": "generate_images", "input": {
        "conditions": {"articleType": "Dresses", "baseColour": "Black"}, "sampling": {"mode": "class_mean"},
        "model": catalog_models["cgan"]}}, timeout=10)
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "input.sampling.mode"


def test_diffusion_steps_and_guidance(client: Client, catalog_models: dict[str, str]) -> None:
    """The sampler's settings: the model's defaults when left out, each given value honoured and
    reported, and the same settings giving the same bytes; other families refuse them by name."""
    ref = catalog_models["diffusion"]
    request = {"conditions": {"articleType": "Dresses", "baseColour": "Black"}, "n": 2, "seed": 3, "model": ref}
    default = run(client, "generate_images", request)["output"]
    assert default["sampling"]["steps"] == 4 and default["sampling"]["guidance"] == 2.0  # the tiny preset's
    set_ = run(client, "generate_images", {**request, "sampling": {"steps": 2, "guidance": 0.5}})["output"]
    assert set_["sampling"]["steps"] == 2 and set_["sampling"]["guidance"] == 0.5
    again = run(client, "generate_images", {**request, "sampling": {"steps": 2, "guidance": 0.5}})["output"]
    assert [client.download(i["url"]) for i in again["images"]] == [client.download(i["url"]) for i in set_["images"]]
    assert [client.download(i["url"]) for i in default["images"]] != [client.download(i["url"]) for i in set_["images"]]
    for sampling, field in (({"steps": 0}, "input.sampling.steps"), ({"steps": 201}, "input.sampling.steps"),
                            ({"guidance": 10.5}, "input.sampling.guidance")):
        error = client.submit("generate_images", {**request, "sampling": sampling}, expect=422)["error"]
        assert error["field"] == field, error
    refused = client.submit("generate_images", {**request, "model": catalog_models["cgan"],
                                                "sampling": {"guidance": 3}}, expect=422)["error"]
    assert refused["code"] == "unsupported_for_family" and refused["field"] == "input.sampling.guidance"
    traverse = client.submit("traverse", {"start": {"prompt": "black dress"}, "model": ref}, expect=422)["error"]
    assert traverse["code"] == "unsupported_for_family" and traverse["field"] == "input.model"
    hybrid = run(client, "hybrid", {"a": {"prompt": "black jumpsuit"}, "b": {"conditions": {
        "articleType": "Dresses", "baseColour": "White"}}, "steps": 3, "model": ref})
    assert len(hybrid["output"]["frames"]) == 3
    item = client.submit("hybrid", {"a": {"item": "123"}, "b": {"item": "456"}, "model": ref}, expect=422)
    assert item["error"]["field"] == "input.a.item"


def test_hybrid_between_two_catalog_items(client: Client, catalog_models: dict[str, str],
                                          catalog_slice: dict, storage: Storage) -> None:
    index = storage.get_json("datasets/catalog-slice/index.json")
    jumpsuit = next(i["id"] for i in index if i["type"] == "Jumpsuit")
    dress = next(i["id"] for i in index if i["type"] == "Dresses")
    done = run(client, "hybrid", {"a": {"item": jumpsuit}, "b": {"item": dress}, "steps": 5,
                                  "model": catalog_models["cvae"]})
    output = done["output"]
    assert len(output["frames"]) == 5 and output["t"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert output["a"]["conditions"]["articleType"] == "Jumpsuit" and output["a"]["item"] == jumpsuit
    strip = image(client, output["sheet"])
    assert strip.size[0] > 7 * 64 and strip.size[1] < 2 * 64  # 5 frames plus the two real photos, one row
    mixed = run(client, "hybrid", {"a": {"item": jumpsuit}, "b": {"item": dress}, "mode": "style_mix",
                                   "model": catalog_models["cvae"]})
    assert len(mixed["output"]["frames"]) == 4


def test_hybrid_between_classes_with_a_gan(client: Client, catalog_models: dict[str, str]) -> None:
    done = run(client, "hybrid", {"a": {"prompt": "black jumpsuit"}, "b": {"conditions": {
        "articleType": "Dresses", "baseColour": "White"}}, "steps": 4, "model": catalog_models["cgan"]})
    assert len(done["output"]["frames"]) == 4
    assert done["output"]["a"]["interpreted"]["articleType"]["value"] == "Jumpsuit"
    refused = client.http.post(f"{client.base}/v1/jobs", json={"type": "hybrid", "input": {
        "a": {"item": "123"}, "b": {"item": "456"}, "model": catalog_models["cgan"]}}, timeout=10)
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "input.a.item"


def test_traversal_grid(client: Client, catalog_models: dict[str, str]) -> None:
    done = run(client, "traverse", {"start": {"conditions": {"articleType": "Tshirts", "baseColour": "Blue"}},
                                    "dims": [0, 5, 7], "steps": 5, "span": 2.0, "model": catalog_models["cvae"]})
    output = done["output"]
    assert output["dims"] == [0, 5, 7] and output["values"] == [-2.0, -1.0, 0.0, 1.0, 2.0]
    grid = image(client, output["grid"])
    assert grid.size[0] > 5 * 64 and 3 * 64 < grid.size[1] < 4 * 64
    default = run(client, "traverse", {"start": {"prompt": "blue tee"}, "model": catalog_models["cvae"]})
    assert len(default["output"]["dims"]) == 8  # the most active dimensions
    bad = run(client, "traverse", {"start": {"prompt": "blue tee"}, "dims": [1000], "model": catalog_models["cvae"]},
              expect_status="failed")
    assert bad["error"]["field"] == "input.dims"


def test_upload_a_merchandisers_catalog(client: Client, worker, tmp_path) -> None:
    """A CSV with its own column names and a zip with one unreadable image and one missing."""
    rows = ["sku,kind,color,name"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(24):
            kind, colour = ("Tops", "Red") if i % 2 else ("Skirts", "Black")
            rows.append(f"A{i},{kind},{colour},Item {i}")
            if i == 3:
                zf.writestr(f"photos/A{i}.jpg", b"not a jpeg")
                continue
            if i == 5:
                continue  # no image at all
            buffer = io.BytesIO()
            Image.new("RGB", (60, 80), (200, 10 * i, 30)).save(buffer, "JPEG")
            zf.writestr(f"photos/A{i}.jpg", buffer.getvalue())
    files = {"csv_file": ("mine.csv", "\n".join(rows).encode(), "text/csv"),
             "images": ("photos.zip", archive.getvalue(), "application/zip")}
    form = {"name": "my-catalog", "id_column": "sku", "type_column": "kind", "colour_column": "color",
            "title_column": "name"}
    response = client.http.post(f"{client.base}/v1/datasets", data=form, files=files, timeout=30)
    assert response.status_code == 202, response.text
    done = client.wait(response.json()["id"], timeout=120)
    assert done["status"] == "succeeded", done
    output = done["output"]
    assert output["skipped"] == {"unreadable_image": 1, "missing_image": 1}
    assert output["sizes"]["train"] + output["sizes"]["test"] == 22

    bad_column = client.http.post(f"{client.base}/v1/datasets", data={**form, "type_column": "category"},
                                  files=files, timeout=30)
    assert bad_column.status_code == 422 and bad_column.json()["error"]["field"] == "type_column"
    not_zip = client.http.post(f"{client.base}/v1/datasets", data=form, timeout=30,
                               files={**files, "images": ("x.zip", b"PK nope", "application/zip")})
    assert not_zip.status_code == 422 and not_zip.json()["error"]["field"] == "images"
    unknown = client.http.post(f"{client.base}/v1/jobs", json={"type": "train", "input": {
        "family": "cvae", "dataset": "never-imported"}}, timeout=10)
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "input.dataset"


def test_upload_number_fields_are_read_from_multipart_text(client: Client, worker) -> None:
    """Finding 19: multipart values arrive as strings; "3" and "0.25" are the numbers meant, "many" a
    422 naming the field."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("p/A1.jpg", b"not decoded before the job runs")
    files = {"csv_file": ("m.csv", b"id,articleType,baseColour,productDisplayName\nA1,Tops,Red,One\n", "text/csv"),
             "images": ("p.zip", archive.getvalue(), "application/zip")}
    form = {"name": "numbers-from-a-form", "min_class_count": "3", "test_fraction": "0.25"}
    response = client.http.post(f"{client.base}/v1/datasets", data=form, files=files, timeout=30)
    assert response.status_code == 202, response.text
    assert response.json()["input"]["min_class_count"] == 3 and response.json()["input"]["test_fraction"] == 0.25
    for field, value in (("min_class_count", "many"), ("test_fraction", "0.9")):
        bad = client.http.post(f"{client.base}/v1/datasets", data={**form, field: value}, files=files, timeout=30)
        assert bad.status_code == 422 and bad.json()["error"]["field"] == field, bad.text
    client.wait(response.json()["id"], timeout=120)  # it ends (too small to train on); nothing left running


def test_import_from_an_object_storage_prefix_with_loose_images(client: Client, worker, storage: Storage) -> None:
    prefix = "uploads/loose-images-test/"
    rows = ["id,articleType,baseColour,productDisplayName"]
    for i in range(10):
        rows.append(f"L{i},Caps,{'Red' if i % 2 else 'Blue'},Cap {i}")
        buffer = io.BytesIO()
        Image.new("RGB", (80, 60), (250, 0, 0) if i % 2 else (0, 0, 250)).save(buffer, "JPEG")
        storage.put(f"{prefix}photos/L{i}.jpg", buffer.getvalue(), "image/jpeg")
    storage.put(prefix + "caps.csv", "\n".join(rows).encode(), "text/csv")
    done = run(client, "import_dataset", {"name": "loose-caps", "source_prefix": prefix})
    assert done["output"]["sizes"] == {"train": 9, "test": 1} and done["output"]["skipped"] == {}
    detail = client.http.get(f"{client.base}/v1/datasets/loose-caps", timeout=10).json()
    assert detail["vocabulary"] == {"articleType": ["Caps"], "baseColour": ["Blue", "Red"]}
    empty = client.http.post(f"{client.base}/v1/jobs", json={"type": "import_dataset", "input": {
        "name": "nothing", "source_prefix": "uploads/does-not-exist/"}}, timeout=10)
    assert empty.status_code == 422 and empty.json()["error"]["field"] == "input.source_prefix"


def test_import_product_descriptions(client: Client, worker, catalog_available) -> None:
    """The Myntra demo copy becomes cleaned (name -> description) pairs; image models refuse it."""
    if not (catalog_available / "myntra-products-catalog").is_dir():
        pytest.skip("ATELIER_DATASETS/myntra-products-catalog is not available")
    done = run(client, "import_dataset", {"name": "descriptions", "format": "descriptions"})
    output = done["output"]
    assert output["format"] == "descriptions" and output["rows"] == 12_491
    assert output["skipped"]["duplicate"] >= 700 and output["cleaning"]["glued_fixed"] > 4_000
    assert sum(output["sizes"].values()) == output["cleaning"]["kept"]
    first = client.download(output["files"][0]["url"]).decode().splitlines()[0]
    assert {"context", "description", "colour", "split"} <= set(json.loads(first))
    refused = client.http.post(f"{client.base}/v1/jobs", json={"type": "train", "input": {
        "family": "cgan", "dataset": "descriptions"}}, timeout=10)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "wrong_dataset_format"


def test_train_the_domain_classifier(client: Client, storage: Storage, catalog_classifier: dict) -> None:
    """Family `classifier` on the catalog slice: a head per condition, held-out accuracy per head and
    per class in the version's metrics, and the nearest-item index; it is not an image generator."""
    out = catalog_classifier
    assert out["model"].startswith("classifier@") and out["metrics"]["epochs"] == 2
    assert out["promotion"] == {"active": False, "reason": "promote: never"}
    assert {"accuracy_articleType", "accuracy_baseColour", "accuracy", "top3_articleType", "ece_articleType",
            "balanced_accuracy_articleType", "train_seconds"} <= set(out["metrics"])
    for head in ("articleType", "baseColour"):  # temperature fitted on half the held-out images, ECE on the rest
        calibration = out["calibration"][head]
        assert calibration["temperature"] > 0 and 0 <= calibration["ece_after"] <= 1
    assert 0 <= out["metrics"]["accuracy_articleType"] <= 1
    assert set(out["per_class_accuracy"]["articleType"]) <= set(CATALOG_SLICE["classes"])
    assert Image.open(io.BytesIO(client.download(out["artifacts"]["loss_curve"]["url"]))).format == "PNG"
    # the nearest-item index: a real catalog image finds itself first, with its catalog title
    index = FeatureIndex.from_npz(storage.get(out["artifacts"]["feature_index"]["key"]))
    judge = classifier.from_checkpoint(torch.load(io.BytesIO(storage.get(out["artifacts"]["weights"]["key"])),
                                                  weights_only=True))
    real = ImageSplit.from_npz(storage.get("datasets/catalog-slice/train.npz")).take(np.array([0, 5, 40]))
    titles = {row["id"]: row["title"] for row in json.loads(storage.get("datasets/catalog-slice/index.json"))}
    for item_id, found in zip(real.ids, index.nearest(embed(judge, real.images, torch.device("cpu"))), strict=True):
        assert found[0].id == item_id and found[0].title == titles[item_id] and found[0].similarity > 0.999
    refused = client.submit("generate_images", {"prompt": "black jumpsuit", "model": out["model"]}, expect=422)
    assert refused["error"]["code"] == "wrong_model_family"
    text = client.submit("train", {"family": "classifier", "dataset": "descriptions"}, expect=422)
    assert text["error"]["code"] == "wrong_dataset_format"

    # a generative model trained after it is evaluated with it: FID/KID next to the real floor, adherence
    cvae = client.wait(client.submit("train", {"family": "cvae", "dataset": "catalog-slice", "preset": "tiny",
                                               "seed": 2, "promote": "never", "max_train_examples": 240})["id"],
                       timeout=300)
    assert cvae["status"] == "succeeded", cvae
    evaluation = cvae["output"]["evaluation"]
    assert evaluation["classifier"] == out["model"] and evaluation["images"] > 0
    assert evaluation["fid"] >= 0 and evaluation["floor"]["fid"] >= 0
    assert set(evaluation["adherence"]) == {"articleType", "baseColour"}
    assert set(evaluation["per_class_adherence"]) <= set(CATALOG_SLICE["classes"])
    # the evaluation names its judge and the judge's own accuracy; below the floor it withholds FID
    assert evaluation["judge"]["ref"] == out["model"]
    assert evaluation["judge"]["held_out_accuracy"] == out["metrics"]["accuracy_articleType"]
    assert set(evaluation["real_accuracy"]) == {"articleType", "baseColour"}
    listed = client.http.get(f"{client.base}/v1/models?family=cvae", timeout=10).json()["models"]
    metrics = next(m for m in listed if m["ref"] == cvae["output"]["model"])["metrics"]
    if evaluation["fid_verdict"]:
        assert metrics["fid"] == evaluation["fid"]
    else:
        assert "fid" not in metrics and metrics["fid_withheld"] == evaluation["fid_withheld"]

    # and each generated image of a model on that dataset carries the classifier's confidence
    generated = client.wait(client.submit("generate_images", {"prompt": "black jumpsuit", "n": 3, "seed": 4,
                                                              "model": cvae["output"]["model"]})["id"], timeout=120)
    assert generated["status"] == "succeeded", generated
    assert generated["output"]["classifier"] == out["model"]
    index = json.loads(storage.get("datasets/catalog-slice/index.json"))
    titles = {row["id"]: row["title"] for row in index}
    for image in generated["output"]["images"]:
        assert set(image["confidence"]) == {"articleType", "baseColour"}
        assert all(0 <= p <= 1 for p in image["confidence"].values())
        # and the five nearest real catalog items, most similar first, named as the catalog names them
        nearest = image["nearest"]
        assert len(nearest) == 5 and [n["similarity"] for n in nearest] == sorted(
            (n["similarity"] for n in nearest), reverse=True)
        assert all(titles[n["id"]] == n["title"] and n["split"] in {"train", "test"} for n in nearest)


def test_generate_returns_only_images_the_classifier_believes(client: Client, catalog_models: dict[str, str],
                                                              catalog_classifier: dict) -> None:
    """min_confidence: extra candidates drawn, those below τ dropped, the n most confident returned with
    their seeds; a shortfall is said, never filled with rejects; the same seed gives the same pick."""
    base = {"conditions": {"articleType": "Jumpsuit", "baseColour": "Black"}, "n": 4, "seed": 7,
            "max_attempts": 2, "model": catalog_models["cgan"]}
    everything = run(client, "generate_images", {**base, "min_confidence": 0.0})["output"]
    selection = everything["selection"]
    assert selection["classifier"] == everything["classifier"] == catalog_classifier["model"]
    assert selection["drawn"] == 8 and selection["rejected"] == 0 and selection["returned"] == 4
    confidence = [image["confidence"]["articleType"] for image in everything["images"]]
    assert confidence == sorted(confidence, reverse=True) and len(set(i["seed"] for i in everything["images"])) == 4

    # τ between two of the confidences seen: the same eight candidates again, fewer of them reach it
    gaps = [i for i in range(1, 4) if confidence[i - 1] - confidence[i] > 2e-4]
    expected = gaps[-1] if gaps else 0
    tau = (confidence[expected - 1] + confidence[expected]) / 2 if gaps else confidence[0] + 1e-3
    strict = run(client, "generate_images", {**base, "min_confidence": tau})["output"]
    kept = strict["selection"]
    assert kept["drawn"] == 8 and kept["returned"] == len(strict["images"]) == expected
    assert kept["rejected"] == 8 - expected and "only" in kept["shortfall"]
    assert all(image["confidence"]["articleType"] >= tau - 1e-4 for image in strict["images"])
    assert [i["seed"] for i in strict["images"]] == [i["seed"] for i in everything["images"]][:expected]
    assert ("contact_sheet" in strict) == (expected > 0)
    again = run(client, "generate_images", {**base, "min_confidence": tau})["output"]
    assert [client.download(i["url"]) for i in again["images"]] == [client.download(i["url"]) for i in strict["images"]]


def test_a_cvae_version_carries_its_latent_map(catalog_models: dict[str, str], storage: Storage) -> None:
    """Seed 003: the held-out latent means projected with t-SNE, coloured by type, beside the weights."""
    family, version = catalog_models["cvae"].split("@")
    latent_map = Image.open(io.BytesIO(storage.get(f"models/{family}/{version}/latent_map.png")))
    assert latent_map.format == "PNG" and latent_map.width > 300
    family, version = catalog_models["cgan"].split("@")
    assert not storage.exists(f"models/{family}/{version}/latent_map.png")  # a GAN has no encoder

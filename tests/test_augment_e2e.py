"""The `augment` job and the nightly schedule over the real stack: rare classes of the catalog slice
topped up with gated synthetic images under augmented/<dataset>/<date>/, classes the evidence says
not to publish left out with the reason, reruns of a date resumed or reused without a duplicate,
and the beat entry submitting one job per dataset and date."""

from __future__ import annotations

import csv
import io
import json
from datetime import date

import pytest
from PIL import Image

from shared.jobs import JobStore
from shared.schemas import JobStatus
from shared.settings import Settings
from shared.storage import Storage
from tests.support import Client
from worker.celery_app import create_worker_app
from worker.context import WorkerContext
from worker.handlers.augment import LOW_ADHERENCE, NOT_HELPFUL
from worker.scheduler import schedule_nightly_augment

pytestmark = pytest.mark.e2e
RARE = ["Jumpsuit", "Rompers"]  # 15 and 11 training images in the slice


@pytest.fixture(scope="module")
def evaluated_cgan(client: Client, catalog_classifier: dict) -> dict:
    """A tiny cgan trained after the classifier, so its evaluation has per-class adherence."""
    done = client.wait(client.submit("train", {"family": "cgan", "dataset": "catalog-slice", "preset": "tiny",
                                               "seed": 7, "promote": "never", "max_train_examples": 240})["id"],
                       timeout=300)
    assert done["status"] == "succeeded", done
    assert done["output"]["evaluation"]["classifier"] == catalog_classifier["model"]
    return done["output"]


def augment(client: Client, **overrides: object) -> dict:
    body = {"dataset": "catalog-slice", "classes": RARE, "max_per_class": 3, "min_confidence": 0.0,
            "min_class_adherence": 0.0, "descriptions": False, **overrides}
    done = client.wait(client.submit("augment", body)["id"], timeout=300)
    assert done["status"] == "succeeded", done.get("error")
    return done["output"]


def keys_under(storage: Storage, prefix: str) -> set[str]:
    return set(storage.list(prefix))


def test_augment_publishes_gated_images_once_per_date(client: Client, storage: Storage, evaluated_cgan: dict) -> None:
    model = evaluated_cgan["model"]
    # the evidence (bench/augment_eval.py --record) says synthetic rompers do not help: not published
    storage.put_json("augmented/catalog-slice/verdicts.json",
                     {"classes": {"Rompers": {"helps": False, "recall_with_synthetic": 0.1, "best_without": 0.3}}})
    try:
        out = augment(client, model=model, date="2026-11-20")
    finally:
        storage.delete("augmented/catalog-slice/verdicts.json")
    assert out["model"] == model and out["date"] == "2026-11-20" and out["not_published"] == {"Rompers": NOT_HELPFUL}
    jumpsuit = out["classes"]["Jumpsuit"]
    assert jumpsuit["count"] == 15 and jumpsuit["requested"] == 3 and jumpsuit["kept"] == 3
    assert jumpsuit["generated"] >= 3 and jumpsuit["shortfall"] == 0
    assert out["rare"]["min_count"] == 50 and out["rule"]["min_confidence"] == 0.0 and out["rule"]["min_distance"] > 0

    root = "augmented/catalog-slice/2026-11-20/"
    rows = [json.loads(line) for line in storage.get(root + "manifest.jsonl").decode().splitlines()]
    assert len(rows) == 3 and {r["class"] for r in rows} == {"Jumpsuit"}
    for row in rows:
        assert row["model"] == model and row["synthetic_id"].startswith("syn-2026-11-20-jumpsuit-")
        assert 0 <= row["confidence"] <= 1 and row["nearest_real_distance"] > out["rule"]["min_distance"]
        assert row["colour"] and row["nearest_real_id"]
        assert row["key"] == f"{root}images/jumpsuit/{row['synthetic_id']}.png"
        assert Image.open(io.BytesIO(storage.get(row["key"]))).size == (64, 64)
    table = list(csv.DictReader(io.StringIO(storage.get(root + "manifest.csv").decode())))
    assert [r["synthetic_id"] for r in table] == [r["synthetic_id"] for r in rows]
    assert {"synthetic_id", "class", "colour", "model", "seed", "confidence", "nearest_real_distance",
            "description"} <= set(table[0])
    first = keys_under(storage, root)

    # a rerun of the date returns the finished run and writes nothing new
    again = augment(client, model=model, date="2026-11-20", max_per_class=9)
    assert again["reused"] is True and again["classes"] == out["classes"]
    assert keys_under(storage, root) == first

    # a run cut short after its images (no class record, no summary) resumes to the same objects
    storage.delete(root + "summary.json")
    storage.delete(root + "classes/jumpsuit.json")
    resumed = augment(client, model=model, date="2026-11-20")
    assert "reused" not in resumed and resumed["classes"] == out["classes"]
    assert resumed["resumed_plan_of"] == out["manifest"]["key"].split("/")[1]  # the first run's plan
    assert keys_under(storage, root) == first
    assert [json.loads(line) for line in storage.get(root + "manifest.jsonl").decode().splitlines()] == rows


def test_augment_leaves_out_classes_the_generator_draws_poorly(client: Client, evaluated_cgan: dict) -> None:
    adherence = evaluated_cgan["evaluation"]["per_class_adherence"]
    out = augment(client, model=evaluated_cgan["model"], date="2026-11-21", min_class_adherence=1.0)
    for name in RARE:
        poor = name in adherence and adherence[name] < 1.0
        assert (out["not_published"].get(name) == LOW_ADHERENCE) == poor, (name, adherence, out)
        if poor:
            assert out["classes"][name]["adherence"] == adherence[name]


def test_augment_refuses_what_it_cannot_do(client: Client, catalog_models: dict, catalog_classifier: dict) -> None:
    def refused(body: dict, field: str, code: str | None = None) -> None:
        error = client.submit("augment", body, expect=422)["error"]
        assert error["field"] == field and (code is None or error["code"] == code), error

    refused({"dataset": "descriptions"}, "input.dataset", "wrong_dataset_format")
    refused({"dataset": "catalog-slice", "classes": ["Tuxedo"]}, "input.classes", "unknown_class")
    refused({"dataset": "catalog-slice", "date": "2026-02-30"}, "input.date")
    refused({"dataset": "catalog-slice", "max_per_class": 0}, "input.max_per_class")
    refused({"dataset": "nowhere"}, "input.dataset", "dataset_not_found")


def test_nightly_schedule_submits_one_job_per_dataset_and_date(client: Client, settings: Settings, store: JobStore,
                                                               evaluated_cgan: dict) -> None:
    nightly = Settings.from_env(**{**settings.model_dump(), "augment_datasets": "catalog-slice",
                                   "augment_time": "03:15", "augment_timezone": "Europe/Paris"})
    app = create_worker_app(nightly)
    entry = app.conf.beat_schedule["nightly-augment"]
    assert entry["task"] == "atelier.schedule_nightly_augment" and app.conf.timezone == "Europe/Paris"
    assert entry["schedule"].hour == {3} and entry["schedule"].minute == {15}

    ctx = WorkerContext(nightly)
    day = date(2026, 11, 22)
    first = schedule_nightly_augment(ctx, day)
    second = schedule_nightly_augment(ctx, day)  # a second beat, or a retry: the same job
    assert first["catalog-slice"]["created"] and not second["catalog-slice"]["created"]
    assert first["catalog-slice"]["job_id"] == second["catalog-slice"]["job_id"]
    job = client.wait(first["catalog-slice"]["job_id"], timeout=300)  # the session's worker runs it
    assert job["input"] == {"dataset": "catalog-slice", "date": "2026-11-22"}
    assert job["status"] == JobStatus.SUCCEEDED, job
    assert job["output"]["date"] == "2026-11-22" and set(job["output"]["classes"]) >= set(RARE)
    assert store.get(job["id"]).status == JobStatus.SUCCEEDED

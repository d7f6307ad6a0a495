"""Bad input over real HTTP: always a JSON 4xx naming the field, never a 5xx."""

from __future__ import annotations

import pytest
import requests

from tests.support import Client

TRAIN = {"family": "cvae", "dataset": "fashion-mnist", "preset": "tiny"}


def post(client: Client, body: object = None, *, data: bytes | str | None = None, headers: dict | None = None):
    if data is None:
        return client.http.post(f"{client.base}/v1/jobs", json=body, headers=headers or {}, timeout=10)
    return client.http.post(f"{client.base}/v1/jobs", data=data, headers=headers or {}, timeout=10)


def error_of(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] and error["message"]
    return error


def test_malformed_json_is_400(client: Client) -> None:
    error = error_of(post(client, data=b'{"type": "train", ', headers={"Content-Type": "application/json"}), 400)
    assert error["code"] == "invalid_json"


def test_wrong_content_type_is_415(client: Client) -> None:
    error = error_of(post(client, data=b"type=train", headers={"Content-Type": "application/x-www-form-urlencoded"}),
                     415)
    assert error["field"] == "Content-Type"


def test_huge_body_is_413(client: Client) -> None:
    body = b'{"type": "train", "input": {"x": "' + b"a" * (2 << 20) + b'"}}'
    error = error_of(post(client, data=body, headers={"Content-Type": "application/json"}), 413)
    assert error["code"] == "payload_too_large"


def test_body_must_be_an_object(client: Client) -> None:
    assert error_of(post(client, [1, 2]), 422)["field"] == "body"


def test_unknown_job_type_names_the_field(client: Client) -> None:
    error = error_of(post(client, {"type": "teleport", "input": {}}), 422)
    assert error["field"] == "type"
    assert "train" in error["message"] and "generate_images" in error["message"]


@pytest.mark.parametrize(("job_input", "field"), [
    ({**TRAIN, "epochs": 0}, "input.epochs"),
    ({**TRAIN, "epochs": "many"}, "input.epochs"),
    ({**TRAIN, "family": "dalle"}, "input.family"),
    ({**TRAIN, "dataset": "../../etc"}, "input.dataset"),
    ({**TRAIN, "seed": -1}, "input.seed"),
    ({**TRAIN, "seed": 2**63}, "input.seed"),
    ({**TRAIN, "learning_rate": 0}, "input.learning_rate"),
    ({**TRAIN, "learning_rate": "0.1"}, "input.learning_rate"),
    ({**TRAIN, "seed": True}, "input.seed"),
    ({**TRAIN, "epochs": "3"}, "input.epochs"),
    ({**TRAIN, "surprise": True}, "input.surprise"),
    ({"dataset": "fashion-mnist"}, "input.family"),
])
def test_train_input_errors_name_the_field(client: Client, job_input: dict, field: str) -> None:
    assert error_of(post(client, {"type": "train", "input": job_input}), 422)["field"] == field


@pytest.mark.parametrize(("job_input", "field"), [
    ({"conditions": {"class": "Dress"}, "n": 0}, "input.n"),
    ({"conditions": {"class": "Dress"}, "n": 65}, "input.n"),
    ({"conditions": {"class": "Dress"}, "n": 1.5}, "input.n"),
    ({"conditions": {}}, "input.conditions"),
    ({"conditions": {"class": "x" * 1000}}, "input.conditions.class"),
    ({"conditions": {"class": True}}, "input.conditions.class"),
    ({"conditions": {"class": 2.5}}, "input.conditions.class"),
    ({"conditions": {"class": "Dress"}, "model": "latest"}, "input.model"),
    ({"conditions": {"class": "Dress"}, "temperature": 99}, "input.temperature"),
    ({"n": 4}, "input.conditions"),
])
def test_generate_input_errors_name_the_field(client: Client, job_input: dict, field: str) -> None:
    assert error_of(post(client, {"type": "generate_images", "input": job_input}), 422)["field"] == field


def test_unknown_top_level_field_and_bad_webhook(client: Client) -> None:
    assert error_of(post(client, {"type": "train", "input": TRAIN, "extra": 1}), 422)["field"] == "extra"
    assert error_of(post(client, {"type": "train", "input": TRAIN, "webhook": "ftp://x"}), 422)["field"] == "webhook"


def test_bad_idempotency_key_header(client: Client) -> None:
    error = error_of(post(client, {"type": "train", "input": TRAIN}, headers={"Idempotency-Key": "a" * 300}), 400)
    assert error["field"] == "Idempotency-Key"


def test_unknown_job_is_404(client: Client) -> None:
    assert error_of(client.http.get(f"{client.base}/v1/jobs/0000deadbeef", timeout=10), 404)["code"] == "not_found"
    assert error_of(client.http.post(f"{client.base}/v1/jobs/0000deadbeef/cancel", timeout=10), 404)


def test_wrong_method_is_405(client: Client) -> None:
    error = error_of(client.http.delete(f"{client.base}/v1/jobs", timeout=10), 405)
    assert error["code"] == "method_not_allowed"


def test_unknown_route_is_404(client: Client) -> None:
    error_of(client.http.get(f"{client.base}/v2/everything", timeout=10), 404)


@pytest.mark.parametrize(("query", "field"), [
    ("limit=0", "limit"), ("limit=1000", "limit"), ("status=lost", "status"), ("type=x", "type"),
    ("cursor=%2F..%2F", "cursor"),
])
def test_list_query_errors(client: Client, query: str, field: str) -> None:
    assert error_of(client.http.get(f"{client.base}/v1/jobs?{query}", timeout=10), 422)["field"] == field


def test_generate_for_unknown_model_version(client: Client) -> None:
    response = post(client, {"type": "generate_images", "input": {"conditions": {"class": 1}, "model": "cvae@v999"}})
    error = error_of(response, 404)
    assert error["code"] == "model_not_found" and error["field"] == "input.model"


def test_activate_unknown_model_is_404(client: Client) -> None:
    error_of(client.http.post(f"{client.base}/v1/models/cvae/v999/activate", timeout=10), 404)


def test_openapi_document_is_generated(client: Client) -> None:
    doc = client.http.get(f"{client.base}/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.")
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/models"} <= set(doc["paths"])
    schemas = doc["components"]["schemas"]
    assert schemas["GenerateImagesInput"]["properties"]["n"]["maximum"] == 64
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["paths"]["/v1/jobs"]["post"]["security"] == [{"bearer": []}]


def test_health_and_readiness(client: Client) -> None:
    assert client.http.get(f"{client.base}/healthz", timeout=10).json() == {"status": "ok"}
    ready = client.http.get(f"{client.base}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["checks"] == {"redis": "ok", "s3": "ok"}

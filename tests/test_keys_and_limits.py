"""API keys over real HTTP: hashed keys from settings, each job owned by its key, admin sees all,
a per-key limit on queued jobs answered with 429 and Retry-After. The app runs on its own Redis
database, so its jobs stay queued (no worker consumes them there)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests

from shared.api_keys import hash_key, new_key
from shared.registry import ModelRegistry
from shared.storage import Storage
from tests.support import ApiServer, on_redis_db, settings_from

pytestmark = pytest.mark.e2e

KEYS = {"alice": new_key(), "bob": new_key(), "ops": new_key()}
TRAIN = {"type": "train", "input": {"family": "cvae", "dataset": "fashion-mnist", "preset": "tiny"}}


@pytest.fixture(scope="module")
def keyed_api(env: dict[str, str]) -> Iterator[str]:
    entries = [{"name": "alice", "sha256": hash_key(KEYS["alice"]), "max_queued": 2},
               {"name": "bob", "sha256": hash_key(KEYS["bob"])},
               {"name": "ops", "sha256": hash_key(KEYS["ops"]), "admin": True}]
    server = ApiServer(settings_from(on_redis_db(env, 5, ATELIER_API_KEYS=json.dumps(entries),
                                                 ATELIER_QUEUE_LIMIT_RETRY_AFTER_SECONDS="17",
                                                 ATELIER_MAX_WAITS_PER_KEY="1"))).start()
    yield server.url
    server.stop()


def call(base: str, method: str, path: str, who: str | None = None, headers: dict | None = None,
         **kwargs: object) -> requests.Response:
    auth = {"Authorization": f"Bearer {KEYS[who]}"} if who else {}
    return requests.request(method, base + path, headers={**auth, **(headers or {})}, timeout=30, **kwargs)


def test_every_v1_call_needs_a_known_key(keyed_api: str) -> None:
    missing = call(keyed_api, "GET", "/v1/jobs")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = requests.get(keyed_api + "/v1/jobs", headers={"Authorization": "Bearer atl_nope"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    # X-API-Key works as well as the bearer header; probes and metrics stay open
    assert requests.get(keyed_api + "/v1/jobs", headers={"X-API-Key": KEYS["bob"]}, timeout=10).status_code == 200
    for open_path in ("/healthz", "/metrics", "/openapi.json"):
        assert call(keyed_api, "GET", open_path).status_code == 200, open_path


def test_a_key_sees_only_its_own_jobs_and_an_admin_sees_all(keyed_api: str) -> None:
    job = call(keyed_api, "POST", "/v1/jobs", "bob", json=TRAIN).json()
    assert job["owner"] == "bob"
    assert call(keyed_api, "GET", f"/v1/jobs/{job['id']}", "bob").status_code == 200
    # alice cannot read, cancel or list it: the same 404 as a job that does not exist
    for method, path in (("GET", f"/v1/jobs/{job['id']}"), ("POST", f"/v1/jobs/{job['id']}/cancel"),
                         ("GET", f"/v1/jobs/{job['id']}/archive")):
        response = call(keyed_api, method, path, "alice")
        assert response.status_code == 404 and response.json()["error"]["field"] == "job_id"
    assert job["id"] not in [j["id"] for j in call(keyed_api, "GET", "/v1/jobs?limit=200", "alice").json()["jobs"]]
    # the admin sees everyone's jobs, or one owner's
    assert call(keyed_api, "GET", f"/v1/jobs/{job['id']}", "ops").status_code == 200
    everyone = call(keyed_api, "GET", "/v1/jobs?limit=200", "ops").json()["jobs"]
    assert job["id"] in [j["id"] for j in everyone]
    bobs = call(keyed_api, "GET", "/v1/jobs?owner=bob&limit=200", "ops").json()["jobs"]
    assert bobs and {j["owner"] for j in bobs} == {"bob"}
    refused = call(keyed_api, "GET", "/v1/jobs?owner=bob", "alice")
    assert refused.status_code == 403 and refused.json()["error"]["field"] == "owner"
    # only an admin changes which model version everyone gets
    activate = call(keyed_api, "POST", "/v1/models/cvae/v1/activate", "bob")
    assert activate.status_code == 403 and activate.json()["error"]["code"] == "admin_only"


def test_queued_jobs_per_key_are_limited_with_429_and_retry_after(keyed_api: str) -> None:
    first = call(keyed_api, "POST", "/v1/jobs", "alice", json=TRAIN, headers={"Idempotency-Key": "a-1"})
    second = call(keyed_api, "POST", "/v1/jobs", "alice", json=TRAIN)
    assert first.status_code == second.status_code == 202
    third = call(keyed_api, "POST", "/v1/jobs", "alice", json=TRAIN)
    assert third.status_code == 429
    assert third.headers["Retry-After"] == "17"
    assert third.json()["error"]["code"] == "too_many_queued_jobs"
    assert third.json()["error"]["details"] == {"queued": 2, "limit": 2}
    # a retried submit of an accepted job is still answered; another key is not affected
    replay = call(keyed_api, "POST", "/v1/jobs", "alice", json=TRAIN, headers={"Idempotency-Key": "a-1"})
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    assert call(keyed_api, "POST", "/v1/jobs", "bob", json=TRAIN).status_code == 202
    # a canceled job frees its place
    assert call(keyed_api, "POST", f"/v1/jobs/{second.json()['id']}/cancel", "alice").status_code == 200
    assert call(keyed_api, "POST", "/v1/jobs", "alice", json=TRAIN).status_code == 202


def test_only_an_admin_key_activates_a_model_version(keyed_api: str) -> None:
    """An ordinary key's train jobs publish inactive versions (promote pinned to never); asking for
    anything else is a 403 naming input.promote. An admin may."""
    for promote in ("always", "auto"):
        refused = call(keyed_api, "POST", "/v1/jobs", "bob",
                       json={**TRAIN, "input": {**TRAIN["input"], "promote": promote}})
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "admin_only" and refused.json()["error"]["field"] == "input.promote"
    ordinary = call(keyed_api, "POST", "/v1/jobs", "bob", json=TRAIN)
    assert ordinary.status_code == 202 and ordinary.json()["input"]["promote"] == "never"
    admin = call(keyed_api, "POST", "/v1/jobs", "ops", json={**TRAIN, "input": {**TRAIN["input"], "promote": "always"}})
    assert admin.status_code == 202 and admin.json()["input"]["promote"] == "always"
    for job in (ordinary.json(), admin.json()):
        call(keyed_api, "POST", f"/v1/jobs/{job['id']}/cancel", "ops")


def test_a_dataset_belongs_to_the_key_that_imported_it(keyed_api: str, storage: Storage,
                                                       env: dict[str, str]) -> None:
    """Another key's dataset is invisible (listed, read, trained on: as if it did not exist), its name
    cannot be re-imported, its uploads cannot be imported, and the shared demo datasets are an
    admin's to replace. An admin sees and may do all of it."""
    name = f"bob-things-{secrets.token_hex(4)}"
    storage.put("uploads/bob/own/catalog.csv", b"id,articleType,baseColour\n1,Tops,Red\n", "text/csv")

    def submit(who: str, job_input: dict, job_type: str = "import_dataset") -> requests.Response:
        return call(keyed_api, "POST", "/v1/jobs", who, json={"type": job_type, "input": job_input})

    def refused(response: requests.Response, status: int, code: str, field: str) -> None:
        assert response.status_code == status, response.text
        assert (response.json()["error"]["code"], response.json()["error"]["field"]) == (code, field)

    job = submit("bob", {"name": name, "source_prefix": "uploads/bob/own/"})
    assert job.status_code == 202, job.text
    assert storage.get_json(f"datasets/{name}/owner.json") == {"owner": "bob"}
    assert submit("bob", {"name": name, "source_prefix": "uploads/bob/own/", "max_per_class": 5}).status_code == 202
    refused(submit("alice", {"name": name}), 403, "dataset_taken", "input.name")
    refused(submit("alice", {"name": "alices", "source_prefix": "uploads/bob/own/"}), 403, "not_your_upload",
            "input.source_prefix")
    refused(submit("alice", {"name": "catalog"}), 403, "admin_only", "input.name")
    # finished: the import writes meta.json last
    storage.put_json(f"datasets/{name}/meta.json", {"name": name, "format": "catalog", "sizes": {"train": 1, "test": 0},
                                                    "vocabulary": {"articleType": ["Tops"], "baseColour": ["Red"]}})
    listed = {who: {d["name"] for d in call(keyed_api, "GET", "/v1/datasets", who).json()["datasets"]}
              for who in ("alice", "bob", "ops")}
    assert name in listed["bob"] and name in listed["ops"] and name not in listed["alice"]
    assert call(keyed_api, "GET", f"/v1/datasets/{name}", "bob").status_code == 200
    refused(call(keyed_api, "GET", f"/v1/datasets/{name}", "alice"), 404, "not_found", "name")
    refused(submit("alice", {"family": "cvae", "dataset": name, "preset": "tiny"}, "train"), 422,
            "dataset_not_found", "input.dataset")
    assert submit("bob", {"family": "cvae", "dataset": name, "preset": "tiny"}, "train").status_code == 202
    # a version trained on it is bob's too: unlisted for alice and, named, a model that does not exist
    version = f"v{900 + len(name) % 50}"
    ModelRegistry(redis.Redis.from_url(on_redis_db(env, 5)["REDIS_URL"])).register(
        {"family": "cvae", "version": version, "ref": f"cvae@{version}", "dataset": name, "job_id": "j",
         "created_at": "2026-12-02T00:00:00+00:00", "metrics": {},
         "vocabulary": {"articleType": ["Tops"], "baseColour": ["Red"]}}, activate="never")
    seen = {who: {m["ref"] for m in call(keyed_api, "GET", "/v1/models", who).json()["models"]}
            for who in ("alice", "bob")}
    assert f"cvae@{version}" in seen["bob"] and f"cvae@{version}" not in seen["alice"]
    refused(submit("alice", {"conditions": {"articleType": "Tops"}, "model": f"cvae@{version}"}, "generate_images"),
            404, "model_not_found", "input.model")
    # augment: the demo catalog's runs are the operator's (finding 8); a key's own dataset is its own
    refused(submit("bob", {"dataset": "catalog", "date": "2030-01-01", "min_confidence": 0}, "augment"), 403,
            "admin_only", "input.dataset")
    refused(submit("alice", {"dataset": name}, "augment"), 422, "dataset_not_found", "input.dataset")
    assert submit("ops", {"name": name, "source_prefix": "uploads/bob/own/"}).status_code == 202
    assert storage.get_json(f"datasets/{name}/owner.json") == {"owner": "bob"}  # an admin's re-import keeps it
    for job in call(keyed_api, "GET", "/v1/jobs", "ops").json()["jobs"]:
        call(keyed_api, "POST", f"/v1/jobs/{job['id']}/cancel", "ops")


def test_console_sessions_are_server_side_and_cookie_signed_writes_come_from_its_origin(keyed_api: str) -> None:
    """Finding 17: the console cookie holds a server-side session (ended by signing out), and a
    cross-site POST carrying it is a 403; the console's own pages (same Origin or Referer) and
    header-keyed API clients are unaffected."""
    job = call(keyed_api, "POST", "/v1/jobs", "bob", json=TRAIN).json()
    signed_in = requests.post(f"{keyed_api}/login", data={"key": KEYS["bob"]}, allow_redirects=False, timeout=10)
    assert signed_in.status_code == 302
    session = signed_in.cookies["atelier_key"]
    assert session and KEYS["bob"] not in session  # finding 17: the cookie holds a session, not the key
    cookie = {"Cookie": f"atelier_key={session}"}
    host = keyed_api.split("//", 1)[1]
    for origin in ({"Origin": "http://evil.example"}, {"Referer": "http://evil.example/page"}, {}):
        refused = requests.post(f"{keyed_api}/v1/jobs/{job['id']}/cancel", headers={**cookie, **origin}, timeout=10)
        assert refused.status_code == 403, (origin, refused.text)
        assert refused.json()["error"]["code"] == "cross_site_request" and refused.json()["error"]["field"] == "Origin"
    assert requests.get(f"{keyed_api}/v1/jobs/{job['id']}", headers={**cookie, "Origin": "http://evil.example"},
                        timeout=10).status_code == 200  # reads are not writes
    same = requests.post(f"{keyed_api}/v1/jobs/{job['id']}/cancel", headers={**cookie, "Origin": f"http://{host}"},
                         timeout=10)
    assert same.status_code == 200, same.text
    api_client = call(keyed_api, "POST", "/v1/jobs", "bob", json=TRAIN, headers={"Origin": "http://evil.example"})
    assert api_client.status_code == 202  # a key in a header is not something a browser adds on its own
    call(keyed_api, "POST", f"/v1/jobs/{api_client.json()['id']}/cancel", "bob")
    # signing out ends the session on the server: the same cookie is then worth nothing
    out = requests.post(f"{keyed_api}/logout", headers={**cookie, "Origin": f"http://{host}"}, allow_redirects=False,
                        timeout=10)
    assert out.status_code == 302
    assert requests.get(f"{keyed_api}/v1/jobs", headers=cookie, timeout=10).status_code == 401


def test_one_key_cannot_hold_every_waiting_thread(keyed_api: str) -> None:
    """Finding 18: beyond ATELIER_MAX_WAITS_PER_KEY open `Prefer: wait` requests (1 here) a key's
    next one is answered at once, without the preference applied; another key still waits."""
    jobs = {who: call(keyed_api, "POST", "/v1/jobs", who, json=TRAIN).json() for who in ("bob", "ops")}
    with ThreadPoolExecutor(3) as pool:
        held = pool.submit(call, keyed_api, "GET", f"/v1/jobs/{jobs['bob']['id']}", "bob", {"Prefer": "wait=4"})
        time.sleep(1.0)  # bob's first wait is open (nothing consumes this database's queue)
        other = pool.submit(call, keyed_api, "GET", f"/v1/jobs/{jobs['ops']['id']}", "ops", {"Prefer": "wait=2"})
        started = time.monotonic()
        second = call(keyed_api, "GET", f"/v1/jobs/{jobs['bob']['id']}", "bob", {"Prefer": "wait=4"})
        assert time.monotonic() - started < 1.5 and "Preference-Applied" not in second.headers
        assert second.status_code == 200 and second.json()["status"] == "queued"
        assert held.result().headers["Preference-Applied"] == "wait=4"
        assert other.result().headers["Preference-Applied"] == "wait=2"
    for job in jobs.values():
        call(keyed_api, "POST", f"/v1/jobs/{job['id']}/cancel", "ops")


def test_bad_key_lists_stop_the_app(env: dict[str, str]) -> None:
    from api import create_app

    for bad in ("not json", '[{"name": "x", "sha256": "short"}]',
                json.dumps([{"name": "x", "sha256": hash_key("a")}, {"name": "x", "sha256": hash_key("b")}])):
        with pytest.raises(ValueError, match="ATELIER_API_KEYS"):
            create_app(settings_from(on_redis_db(env, 5, ATELIER_API_KEYS=bad)))

"""Object storage against a real SeaweedFS: round trips, listing, deletes and presigned URLs."""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from shared.settings import Settings
from shared.storage import PutItem, Storage


def test_round_trip_list_delete(storage: Storage) -> None:
    prefix = f"tests/{uuid.uuid4().hex}/"
    storage.put(prefix + "a.txt", b"alpha", "text/plain")
    storage.put_json(prefix + "b.json", {"x": 1})
    storage.put_many([PutItem(f"{prefix}many/{i}.bin", bytes([i]) * 10) for i in range(20)])
    assert storage.get(prefix + "a.txt") == b"alpha"
    assert storage.get_json(prefix + "b.json") == {"x": 1}
    assert storage.exists(prefix + "a.txt") and not storage.exists(prefix + "missing")
    keys = sorted(storage.list(prefix))
    assert len(keys) == 22 and keys[0] == prefix + "a.txt"
    assert storage.delete_prefix(prefix + "many/") == 20
    storage.delete(prefix + "a.txt")
    assert sorted(storage.list(prefix)) == [prefix + "b.json"]


def test_a_failed_put_many_leaves_no_upload_behind(storage: Storage) -> None:
    """The upload threads outlive the call: when one put fails, put_many returns only once the
    others have finished or been dropped, so nothing of a failed job is still being written."""
    prefix = f"tests/{uuid.uuid4().hex}/"

    def broken() -> bytes:
        raise ValueError("encoding failed")

    def slow() -> bytes:
        time.sleep(0.5)
        return b"late"

    with pytest.raises(ValueError, match="encoding failed"):
        storage.put_many([PutItem(prefix + "broken", broken), PutItem(prefix + "slow", slow)])
    written = set(storage.list(prefix))
    time.sleep(0.8)
    assert set(storage.list(prefix)) == written  # nothing landed after put_many returned


def test_presigned_url_downloads_without_credentials(storage: Storage) -> None:
    key = f"tests/{uuid.uuid4().hex}.png"
    storage.put(key, b"\x89PNG-bytes", "image/png")
    response = requests.get(storage.presigned_url(key), timeout=10)
    assert response.status_code == 200 and response.content == b"\x89PNG-bytes"
    assert response.headers["Content-Type"] == "image/png"
    unsigned = storage.presigned_url(key).split("?")[0]
    assert requests.get(unsigned, timeout=10).status_code == 403


def test_expired_presigned_url_is_refused(storage: Storage) -> None:
    key = f"tests/{uuid.uuid4().hex}.txt"
    storage.put(key, b"short-lived")
    url = storage.presigned_url(key, expiry_s=1)
    time.sleep(2.1)
    assert requests.get(url, timeout=10).status_code == 403


def test_wrong_credentials_are_refused(settings: Settings) -> None:
    intruder = Storage(settings.model_copy(update={"s3_secret_access_key": "wrong", "s3_create_bucket": False}))
    with pytest.raises(Exception, match="(?i)signature|denied|forbidden|403"):
        intruder.get("anything")

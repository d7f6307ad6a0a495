"""What the bench scripts share: the object store of the local `make run` service (var/), or the
one the S3_* settings name, and model versions loaded from it."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from shared.registry import model_prefix, parse_ref
from shared.settings import Settings
from shared.storage import Storage
from worker.families import load_checkpoint


def local_storage(var: Path) -> Storage:
    if os.environ.get("S3_ENDPOINT_URL"):
        return Storage(Settings.from_env())
    access, secret = json.loads((var / "s3" / "credentials.json").read_text()).values()
    return Storage(Settings.from_env(s3_endpoint_url="http://127.0.0.1:8333", s3_access_key_id=access,
                                     s3_secret_access_key=secret))


def load_version(storage: Storage, ref: str, device: str = "cpu") -> tuple[Any, dict]:
    """A model version's network (any family) and its model.json."""
    family, version = parse_ref(ref)
    blob = storage.get(model_prefix(family, version) + "model.pt")
    model = load_checkpoint(family, torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True))
    return model.to(device), storage.get_json(model_prefix(family, version) + "model.json")

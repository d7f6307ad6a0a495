"""Who may see, use and replace a dataset (issue 17, finding 2).

An imported dataset belongs to the key that first imported it under its name: only that key (and
admins) lists it, reads it, trains or augments on it and re-imports it. The built-in demo datasets
are shared: every key reads them, only an admin re-imports them. Uploads are stored under the
uploading key's own prefix, and an ordinary key imports only from there.

The owner is claimed at submit, atomically in Redis (SET NX, so two keys racing for a new name
cannot both win), and recorded in object storage beside the dataset (`owner.json`), which survives a
Redis restart. Datasets imported before owners were recorded have none and stay readable by every
key, but only an admin may replace them. With keys off every caller is the admin.
"""

from __future__ import annotations

import re

from api.auth import caller_is_admin, current_caller
from api.services import services
from shared.errors import Forbidden, NotFound, ValidationFailed
from shared.schemas import BUILTIN_DATASETS, ModelVersion

CLAIM_KEY = "atelier:dataset-owner:{name}"


def owner_key(name: str) -> str:
    return f"datasets/{name}/owner.json"


def owner_of(name: str) -> str | None:
    """The key name that owns an imported dataset; None for built-in and unclaimed ones."""
    if name in BUILTIN_DATASETS:
        return None
    claimed = services().store.redis.get(CLAIM_KEY.format(name=name))
    if claimed:
        return claimed.decode() if isinstance(claimed, bytes) else claimed
    storage = services().storage
    return storage.get_json(owner_key(name)).get("owner") if storage.exists(owner_key(name)) else None


def may_read(name: str) -> bool:
    if caller_is_admin() or name in BUILTIN_DATASETS:
        return True
    owner = owner_of(name)
    return owner is None or owner == current_caller().owner


def require_readable(name: str, field: str) -> None:
    """The same answer for another key's dataset as for one that does not exist."""
    if not may_read(name):
        raise NotFound(f"no dataset {name}", field=field)


def upload_prefix() -> str:
    """Where the caller's uploads are stored: a folder of its own."""
    return f"uploads/{_slug(current_caller().owner)}/"


def check_source(prefix: str | None, field: str = "input.source_prefix") -> None:
    if prefix is None or caller_is_admin():
        return
    if not prefix.startswith(upload_prefix()):
        raise Forbidden(f"an ordinary key imports only from its own uploads ({upload_prefix()}…)",
                        code="not_your_upload", field=field)


def claim(name: str, field: str = "input.name") -> None:
    """Make the caller the dataset's owner, or refuse: a built-in name is an admin's to re-import,
    another key's name is taken. An admin's re-import keeps the owner it had."""
    if caller_is_admin():
        return
    if name in BUILTIN_DATASETS:
        raise Forbidden(f"{name} is a shared demo dataset; only an admin key may re-import it",
                        code="admin_only", field=field)
    me = current_caller().owner
    existing = owner_of(name)
    storage = services().storage
    if existing is None and storage.exists(f"datasets/{name}/meta.json"):
        raise Forbidden(f"dataset {name} was imported before owners were recorded; only an admin key may replace "
                        "it", code="admin_only", field=field)
    redis = services().store.redis
    # another key's name, or lost the race for a new one (SET NX is the one atomic claim)
    if existing not in (None, me) or (not redis.set(CLAIM_KEY.format(name=name), me, nx=True)
                                      and owner_of(name) != me):
        raise Forbidden(f"the dataset name {name} belongs to another key; choose another name", code="dataset_taken",
                        field=field)
    if existing is None:
        storage.put_json(owner_key(name), {"owner": me})


def require_owner(name: str, field: str, what: str) -> None:
    """Only the dataset's own key (or an admin) may `what` on it; on the shared demo datasets and
    unowned ones, only an admin (their nightly runs are the operator's)."""
    if caller_is_admin() or (name not in BUILTIN_DATASETS and owner_of(name) == current_caller().owner):
        return
    require_readable(name, field)
    raise Forbidden(f"only an admin key may {what} on {name}, a dataset this key does not own",
                    code="admin_only", field=field)


def model_visible(model: ModelVersion) -> bool:
    """A version trained on a dataset is the dataset's owner's (its vocabulary and counts describe
    that dataset); an active version is an admin's choice to share and visible to every key."""
    return model.active or may_read(model.dataset)


def _slug(owner: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", owner)


def known_dataset(name: str, field: str) -> None:
    """For jobs naming a dataset: it exists for this caller (422 otherwise, as before)."""
    if not may_read(name):
        raise ValidationFailed(f"dataset {name!r} has not been imported; POST /v1/datasets or submit an "
                               "import_dataset job first", code="dataset_not_found", field=field)

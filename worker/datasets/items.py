"""A dataset's items by id, for visual search: their photos (as imported) and conditions, kept once
per worker process, and the photos written to object storage on first use."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np

from shared.storage import PutItem, Storage
from worker.images import png_bytes

SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")


class CatalogItems:
    """A dataset's items by id, for visual search: their photos and conditions, loaded once per process."""

    def __init__(self, name: str, dataset: Any, stamp: str) -> None:
        self.name, self.dataset, self.stamp = name, dataset, stamp
        self.vocabulary: dict[str, list[str]] = dataset.vocabulary
        self.image_size, self.channels = dataset.image_size, dataset.channels
        self.rows: dict[str, tuple[Any, int]] = {}
        for split in (dataset.train, dataset.test):
            if split.ids is not None:
                for row, item in enumerate(split.ids):
                    self.rows.setdefault(str(item), (split, row))
        self.written: set[str] = set()

    def find(self, item: str) -> np.ndarray | None:
        found = self.rows.get(item)
        return None if found is None else found[0].images[found[1]]

    def describe(self, item: str) -> dict[str, str]:
        found = self.rows.get(item)
        if found is None:
            return {}
        split, row = found
        return {k: self.vocabulary[k][int(v[row])] for k, v in split.conditions.items()}

    def photo_keys(self, storage: Storage, ids: list[str]) -> dict[str, str]:
        """Object keys of the items' photos, uploading the ones not stored yet."""
        keys = {item: f"datasets/{self.name}/photos/{self.stamp}/{_safe(item)}.png" for item in ids}
        missing = [(item, image) for item in ids if keys[item] not in self.written
                   and not storage.exists(keys[item]) and (image := self.find(item)) is not None]
        storage.put_many([PutItem(keys[item], png_bytes(image), "image/png") for item, image in missing])
        self.written.update(keys.values())
        return keys


def _safe(item: str) -> str:
    """An object-key name for an item id (ids from an uploaded CSV may hold anything)."""
    return item if SAFE_ID.fullmatch(item) else hashlib.sha256(item.encode()).hexdigest()[:24]


def catalog_stamp(meta: dict | None) -> str:
    """Which import of a dataset the photos belong to (a re-import writes them anew)."""
    return hashlib.sha256(str((meta or {}).get("imported_at", "")).encode()).hexdigest()[:12]

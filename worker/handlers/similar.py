"""The `similar` job (seed 001's visual search): a catalog item or a merchandiser's photo -> the k
catalog items that look most like it, by the pinned classifier's feature index (built by the
classifier's train job), and the photo's product type and colour as the classifier reads them, with
calibrated confidence (seed 004's taxonomy check).

A photo is letterboxed onto the catalog's canvas exactly as imported photos were, so a catalog
photo finds itself first. The neighbours' photos are written to object storage on first use
(`datasets/<name>/photos/<import>/<id>.png`), so a search costs k small uploads at most."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np

from shared.errors import JobFailure
from shared.query_images import decode_base64_image, open_checked
from shared.schemas import Job, SimilarInput
from shared.storage import PutItem
from worker.context import WorkerContext
from worker.datasets.catalog import letterbox_image
from worker.evaluation import to_float
from worker.handlers.common import Progress, ShouldStop, write_manifest
from worker.handlers.conditioning import pinned_model
from worker.images import png_bytes
from worker.models.classifier import predict_with_features

TOP = 3  # predicted values listed per condition
SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")


def similar(ctx: WorkerContext, job: Job, progress: Progress, should_stop: ShouldStop) -> dict:
    inp = SimilarInput(**job.input)
    meta = pinned_model(ctx, job, inp.classifier)
    name = inp.dataset or meta.dataset
    index = ctx.feature_index(name, meta.ref, build=False)
    if index is None:
        raise JobFailure(f"no visual-search index of {name} under {meta.ref}", code="index_not_built",
                         field="input.dataset")
    progress(0.1, f"loading {name}")
    catalog = ctx.catalog_items(name)
    query: dict[str, Any]
    if inp.item is not None:
        found = catalog.find(inp.item)
        if found is None:
            raise JobFailure(f"no item {inp.item!r} in dataset {name} (items below the class minimum are not "
                             "imported)", code="item_not_found", field="input.item")
        image = found
        query = {"item": inp.item, **catalog.describe(inp.item)}
    else:
        data = decode_base64_image(inp.image or "", "input.image")
        image = letterbox_image(open_checked(data, "input.image"), catalog.image_size, catalog.channels)
        query = {"image": {"width": int(image.shape[1]), "height": int(image.shape[0])}}

    progress(0.4, "searching")
    model = ctx.load_model(meta.ref)
    probs, features = predict_with_features(model, to_float(image[None]).to(ctx.device))
    extra = 1 if inp.item is not None else 0  # an item is its own nearest neighbour: leave it out
    sims, rows = index.search(features.cpu().numpy(), inp.k + extra)
    picked = [(float(s), int(r)) for s, r in zip(sims[0], rows[0], strict=True)
              if str(index.ids[r]) != inp.item][:inp.k]
    ids = [str(index.ids[r]) for _, r in picked]
    photos = catalog.photo_keys(ctx, ids)
    neighbours = [{"id": item, "title": str(index.titles[r]), "similarity": round(s, 4), "split": str(index.splits[r]),
                   **catalog.describe(item), "photo": {"key": photos[item]}}
                  for (s, r), item in zip(picked, ids, strict=True)]

    prefix = f"jobs/{job.id}/"
    ctx.storage.put(prefix + "query.png", png_bytes(image), "image/png")
    query["photo"] = {"key": prefix + "query.png"}
    output = {"classifier": meta.ref, "dataset": name, "k": inp.k, "query": query,
              "predicted": _predicted(probs, catalog.vocabulary), "neighbours": neighbours}
    write_manifest(ctx.storage, job, output, seeds={}, model=meta.ref)
    return output


def _predicted(probs: dict[str, Any], vocabulary: dict[str, list[str]]) -> dict[str, Any]:
    """Per condition: the most likely value, its calibrated confidence, and the runners-up."""
    out = {}
    for head, p in probs.items():
        row = p[0].cpu().numpy()
        order = np.argsort(-row)[:TOP]
        names = vocabulary[head]
        out[head] = {"value": names[order[0]], "confidence": round(float(row[order[0]]), 4),
                     "top": [{"value": names[i], "confidence": round(float(row[i]), 4)} for i in order]}
    return out


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

    def photo_keys(self, ctx: WorkerContext, ids: list[str]) -> dict[str, str]:
        """Object keys of the items' photos, uploading the ones not stored yet."""
        keys = {item: f"datasets/{self.name}/photos/{self.stamp}/{_safe(item)}.png" for item in ids}
        missing = [item for item in ids if keys[item] not in self.written and not ctx.storage.exists(keys[item])]
        ctx.storage.put_many([PutItem(keys[item], png_bytes(self.find(item)), "image/png") for item in missing
                              if self.find(item) is not None])
        self.written.update(keys.values())
        return keys


def _safe(item: str) -> str:
    """An object-key name for an item id (ids from an uploaded CSV may hold anything)."""
    return item if SAFE_ID.fullmatch(item) else hashlib.sha256(item.encode()).hexdigest()[:24]


def catalog_stamp(meta: dict | None) -> str:
    """Which import of a dataset the photos belong to (a re-import writes them anew)."""
    return hashlib.sha256(str((meta or {}).get("imported_at", "")).encode()).hexdigest()[:12]

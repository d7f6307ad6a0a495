"""The `similar` job (seed 001's visual search): a catalog item or a merchandiser's photo -> the k
catalog items that look most like it, by the pinned classifier's feature index (built by the
classifier's train job), and the photo's product type and colour as the classifier reads them, with
calibrated confidence (seed 004's taxonomy check).

A photo is letterboxed onto the catalog's canvas exactly as imported photos were, so a catalog
photo finds itself first. The neighbours' photos are written to object storage on first use
(`datasets/<name>/photos/<import>/<id>.png`), so a search costs k small uploads at most."""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.errors import JobFailure
from shared.query_images import decode_base64_image, decode_rgb
from shared.schemas import Job, SimilarInput
from worker.context import WorkerContext
from worker.datasets.catalog import letterbox_image
from worker.evaluation import to_float
from worker.handlers.common import Progress, ShouldStop, write_manifest
from worker.handlers.conditioning import pinned_model
from worker.images import png_bytes
from worker.models.classifier import predict_with_features

TOP = 3  # predicted values listed per condition


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
        image = letterbox_image(decode_rgb(data, "input.image"), catalog.image_size, catalog.channels)
        query = {"image": {"width": int(image.shape[1]), "height": int(image.shape[0])}}

    progress(0.4, "searching")
    model = ctx.load_model(meta.ref)
    probs, features = predict_with_features(model, to_float(image[None]).to(ctx.device))
    extra = 1 if inp.item is not None else 0  # an item is its own nearest neighbour: leave it out
    sims, rows = index.search(features.cpu().numpy(), inp.k + extra)
    picked = [(float(s), int(r)) for s, r in zip(sims[0], rows[0], strict=True)
              if str(index.ids[r]) != inp.item][:inp.k]
    ids = [str(index.ids[r]) for _, r in picked]
    photos = catalog.photo_keys(ctx.storage, ids)
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

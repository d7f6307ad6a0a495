"""The `similar` job (seed 001's visual search): a catalog item or a merchandiser's photo -> the k
catalog items that look most like it, by the pinned classifier's feature index (built by the
classifier's train job), and the photo's product type and colour as the classifier reads them, with
calibrated confidence (seed 004's taxonomy check).

A photo is letterboxed onto the catalog's canvas exactly as imported photos were, so a catalog
photo finds itself first. The neighbours' photos are written to object storage on first use
(`datasets/<name>/photos/<import>/<id>.png`), so a search costs k small uploads at most. Queued
searches with the same classifier version read their photos in the same forward pass
(worker/batching.py); each gets the answer it gets alone."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from celery.exceptions import SoftTimeLimitExceeded

from shared.errors import JobFailure
from shared.query_images import decode_base64_image, decode_rgb
from shared.schemas import Job, JobType, SimilarInput
from worker.batching import companions, finish_companions, run_together
from worker.context import WorkerContext
from worker.datasets.catalog import letterbox_image
from worker.evaluation import to_float
from worker.feature_index import FeatureIndex
from worker.handlers.common import Progress, ShouldStop, write_manifest
from worker.handlers.conditioning import pinned_model
from worker.images import png_bytes
from worker.models.classifier import predict_with_features

TOP = 3  # predicted values listed per condition


@dataclass
class Query:
    """One search, read and checked before the classifier sees its photo."""

    job: Job
    inp: SimilarInput
    ref: str
    dataset: str
    index: FeatureIndex
    catalog: Any
    image: np.ndarray  # [H, W, C] uint8 on the catalog's canvas
    query: dict[str, Any]
    batch: dict[str, Any] | None = None  # set when its photo was read in a pass shared with other jobs


def _query(ctx: WorkerContext, job: Job, progress: Progress) -> Query:
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
    return Query(job, inp, meta.ref, name, index, catalog, image, query)


def similar(ctx: WorkerContext, job: Job, progress: Progress, should_stop: ShouldStop) -> dict:
    leader = _query(ctx, job, progress)
    model = ctx.load_model(leader.ref)
    room = ctx.settings.batch_max_queries - 1
    ready: dict[str, Query] = {}  # searches read while deciding who joins, kept for the pass
    with companions(ctx, job, partial(_joins, ctx, leader=leader, ready=ready), room) if room > 0 \
            else nullcontext([]) as others:
        joined = [(other, ready[other.job.id]) for other in others]
        progress(0.4, "searching" + (f" with {len(joined)} other jobs" if joined else ""))
        read = _read_together(ctx, model, [leader] + [q for _, q in joined])
        finish_companions(ctx, joined, read[1:], lambda c, q, r, *_: _outputs(c, q, r))
    return _outputs(ctx, leader, read[0])


def _joins(ctx: WorkerContext, other: Job, *, leader: Query, ready: dict[str, Query]) -> int | None:
    """A queued search joins the leader's pass when it uses the same classifier version and reads
    cleanly (one that does not runs alone and says why there)."""
    if other.type != JobType.SIMILAR or other.model != leader.job.model:
        return None
    try:
        query = _query(ctx, other, lambda *_: None)
    except SoftTimeLimitExceeded:  # the leader's time is up, not a fault of this job
        raise
    except Exception:  # it fails the same way when it runs alone, and says why there
        return None
    if query.image.shape != leader.image.shape:
        return None
    ready[other.id] = query
    return 1


Read = tuple[dict[str, torch.Tensor], torch.Tensor]


def _read(ctx: WorkerContext, model: Any, queries: list[Query]) -> list[Read]:
    """Class probabilities and features for every query's photo, in one forward pass."""
    probs, features = predict_with_features(model, to_float(np.stack([q.image for q in queries])).to(ctx.device))
    return [({head: p[i:i + 1] for head, p in probs.items()}, features[i:i + 1]) for i in range(len(queries))]


def _read_together(ctx: WorkerContext, model: Any, queries: list[Query]) -> list[Read | None]:
    """One classifier pass for every query's photo (each gets the answer it gets alone)."""
    return run_together(queries, lambda: _read(ctx, model, queries),
                        {"leader": queries[0].job.id, "jobs": len(queries)})


def _outputs(ctx: WorkerContext, q: Query, read: Read | None) -> dict:
    """One search's neighbours, its photo and its manifest (its photo read here when no shared pass
    read it)."""
    inp, index = q.inp, q.index
    probs, features = read or _read(ctx, ctx.load_model(q.ref), [q])[0]
    extra = 1 if inp.item is not None else 0  # an item is its own nearest neighbour: leave it out
    sims, rows = index.search(features.cpu().numpy(), inp.k + extra)
    picked = [(float(s), int(r)) for s, r in zip(sims[0], rows[0], strict=True)
              if str(index.ids[r]) != inp.item][:inp.k]
    ids = [str(index.ids[r]) for _, r in picked]
    photos = q.catalog.photo_keys(ctx.storage, ids)
    neighbours = [{"id": item, "title": str(index.titles[r]), "similarity": round(s, 4), "split": str(index.splits[r]),
                   **q.catalog.describe(item), "photo": {"key": photos[item]}}
                  for (s, r), item in zip(picked, ids, strict=True)]

    prefix = f"jobs/{q.job.id}/"
    ctx.storage.put(prefix + "query.png", png_bytes(q.image), "image/png")
    query = {**q.query, "photo": {"key": prefix + "query.png"}}
    output = {"classifier": q.ref, "dataset": q.dataset, "k": inp.k, "query": query,
              "predicted": _predicted(probs, q.catalog.vocabulary), "neighbours": neighbours}
    if q.batch:
        output["batch"] = q.batch
    write_manifest(ctx.storage, q.job, output, seeds={}, model=q.ref)
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

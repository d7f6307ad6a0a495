"""The `generate_images` job: sample n images for explicit conditions from a pinned model version,
one PNG per image with its own seed, a contact sheet and the manifest."""

from __future__ import annotations

import logging

from shared.conditions import resolve_conditions
from shared.errors import JobCanceled, JobFailure
from shared.registry import parse_ref
from shared.schemas import GenerateImagesInput, Job
from shared.storage import PutItem
from worker.context import WorkerContext
from worker.handlers.common import Progress, ShouldStop, write_manifest
from worker.images import grid, png_bytes, to_uint8
from worker.models import FAMILIES

log = logging.getLogger(__name__)


def generate_images(ctx: WorkerContext, job: Job, progress: Progress, should_stop: ShouldStop) -> dict:
    inp = GenerateImagesInput(**job.input)
    ref = job.model or inp.model
    if not ref:
        raise JobFailure("the job has no model version", code="no_active_model")
    family, version = parse_ref(ref)
    meta = ctx.registry.get(family, version)
    if meta is None:
        raise JobFailure(f"model {ref} no longer exists", code="model_not_found")
    cond = resolve_conditions(meta.vocabulary, inp.conditions)
    seed = inp.seed if inp.seed is not None else 0
    seeds = [seed + i for i in range(inp.n)]

    progress(0.05, f"loading {ref}")
    model = ctx.load_model(ref)
    if should_stop():
        raise JobCanceled()
    progress(0.2, f"sampling {inp.n} images")
    images = to_uint8(FAMILIES[family].sample(model, cond, seeds, temperature=inp.temperature, device=ctx.device))
    if should_stop():
        raise JobCanceled()

    progress(0.6, "saving images")
    prefix = f"jobs/{job.id}/"
    names = {k: meta.vocabulary[k][v] for k, v in cond.items()}
    items = [PutItem(f"{prefix}images/{i:03d}.png", png_bytes(img), "image/png") for i, img in enumerate(images)]
    sheet_key = f"{prefix}contact_sheet.png"
    items.append(PutItem(sheet_key, png_bytes(grid(images, 8, scale=2)), "image/png"))
    ctx.storage.put_many(items)

    height, width = images.shape[1:3]
    output = {
        "model": ref,
        "conditions": names,
        "images": [{"index": i, "seed": s, "key": items[i].key, "width": int(width), "height": int(height)}
                   for i, s in enumerate(seeds)],
        "contact_sheet": {"key": sheet_key},
    }
    write_manifest(ctx.storage, job, output, seeds={"base": seed, "per_image": seeds}, model=ref)
    return output

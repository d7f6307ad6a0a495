"""The `generate_images` job: explicit conditions or a free-text prompt -> n images from a pinned
model version, one PNG per image with its own seed (kept together in one archive, each served by its
own signed URL), a contact sheet and the manifest. With `dry_run` it only reports how the prompt was
interpreted. With `descriptions: k` the first k images each get product copy from the language model,
written from the same request and the image's seed. Queued jobs for the same version are sampled in
the same forward pass (worker/batching.py); each job's images are the ones it gets alone."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded

from shared.conditions import resolve_conditions
from shared.errors import JobCanceled, JobFailure
from shared.schemas import AttributesInput, GenerateImagesInput, Job, JobType, ModelVersion
from shared.storage import PutItem
from worker.batching import Companion, companions, finish_companions, run_together
from worker.context import WorkerContext
from worker.describing import request_for, write_copy
from worker.evaluation import to_float
from worker.families import IMAGE_FAMILIES, SampleRequest
from worker.handlers.common import Progress, ShouldStop, write_manifest
from worker.handlers.conditioning import interpret_prompt, names_of, pinned_model, roles_of
from worker.images import ArchivedImage, grid, png_archive, png_bytes, to_uint8
from worker.models import classifier, lm
from worker.runner import execute

NEAREST = 5  # real items listed per generated image


@dataclass
class Plan:
    """One job's request, worked out before sampling (prompt read, conditions resolved)."""

    job: Job
    inp: GenerateImagesInput
    meta: ModelVersion
    cond: dict[str, int]
    names: dict[str, str]
    interpreted: dict[str, Any] | None
    seed: int
    batch: dict[str, Any] | None = None  # set when its images came from a forward pass shared with other jobs

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.inp.n)]


def _plan(ctx: WorkerContext, job: Job, progress: Progress) -> Plan:
    inp = GenerateImagesInput(**job.input)
    meta = pinned_model(ctx, job, inp.model)
    interpreted = None
    if inp.prompt is not None:
        progress(0.02, "interpreting the prompt")
        cond, interpreted = interpret_prompt(ctx, meta, inp.prompt, allow_approximate=inp.allow_approximate)
    else:
        cond = resolve_conditions(meta.vocabulary, inp.conditions or {})
    return Plan(job, inp, meta, cond, names_of(meta, cond), interpreted, inp.seed if inp.seed is not None else 0)


def _request(plan: Plan, model: Any, seeds: list[int]) -> SampleRequest:
    family, inp = IMAGE_FAMILIES[plan.meta.family], plan.inp
    return SampleRequest(plan.cond, seeds, temperature=inp.temperature,
                         mode=family.sampling_mode(model, inp.sampling.mode), spread=inp.sampling.spread,
                         options=inp.sampling.family_options(family.facts.sampling))


def generate_images(ctx: WorkerContext, job: Job, progress: Progress, should_stop: ShouldStop) -> dict:
    plan = _plan(ctx, job, progress)
    inp, ref = plan.inp, plan.meta.ref
    if inp.dry_run:
        output = {"model": ref, "prompt": inp.prompt, "interpreted": plan.interpreted, "conditions": plan.names,
                  "dry_run": True}
        write_manifest(ctx.storage, job, output, seeds={"base": plan.seed}, model=ref)
        return output

    progress(0.05, f"loading {ref}")
    model = ctx.load_model(ref)
    if should_stop():
        raise JobCanceled()
    family = IMAGE_FAMILIES[plan.meta.family]

    def draw(seeds: list[int], p: Plan = plan) -> np.ndarray:
        return to_uint8(family.sample(model, _request(p, model, seeds), ctx.device))

    if inp.min_confidence is not None:
        progress(0.2, f"sampling up to {inp.n * inp.max_attempts} candidates for {inp.n} images")
        seeds, images, selection = _select(ctx, plan.meta, plan.cond, inp, plan.seed, draw, should_stop)
        return _outputs(ctx, plan, model, seeds, images, selection, progress, should_stop)
    room = ctx.settings.batch_max_images - inp.n
    with companions(ctx, job, partial(_joins, leader=job, inp=inp), room) if room > 0 else nullcontext([]) as others:
        plans: list[tuple[Companion, Plan]] = []
        for other in others:
            try:
                plans.append((other, _plan(ctx, other.job, other.session.progress)))
            except SoftTimeLimitExceeded:  # the leader's time is up, not a fault of this job
                raise
            except Exception as exc:  # its own error (a prompt not understood, say), recorded as it would be alone
                execute(ctx, other.job, other.session, partial(_raise, exc))
        progress(0.2, f"sampling {inp.n} images" + (f" with {len(plans)} other jobs" if plans else ""))
        sampled = _sample_together(family, model, [plan] + [p for _, p in plans], ctx.device)
        images = draw(plan.seeds) if sampled[0] is None else sampled[0]
        finish_companions(ctx, plans, sampled[1:], lambda c, op, d, p, stop: _outputs(
            c, op, model, op.seeds, draw(op.seeds, op) if d is None else d, None, p, stop))
    return _outputs(ctx, plan, model, plan.seeds, images, None, progress, should_stop)


def _sample_together(family: Any, model: Any, plans: list[Plan], device: Any) -> list[np.ndarray | None]:
    """One forward pass for every plan (each gets the images it gets alone)."""
    requests = [_request(p, model, p.seeds) for p in plans]
    return run_together(plans, lambda: [to_uint8(images) for images in family.sample_many(model, requests, device)],
                        {"leader": plans[0].job.id, "jobs": len(plans), "images": sum(len(r.seeds) for r in requests)})


def _joins(other: Job, *, leader: Job, inp: GenerateImagesInput) -> int | None:
    """How many images a queued job would add to the leader's forward pass, or None when it cannot
    join: another model version, a dry run, a min_confidence search (its own candidate loop) or
    other sampling settings."""
    if other.type != JobType.GENERATE_IMAGES or other.model != leader.model:
        return None
    try:
        theirs = GenerateImagesInput(**other.input)
    except ValueError:  # a record this version cannot read: it runs alone and says why
        return None
    if theirs.dry_run or theirs.min_confidence is not None:
        return None
    return theirs.n if (theirs.temperature, theirs.sampling) == (inp.temperature, inp.sampling) else None


def _raise(exc: BaseException, *_: Any) -> dict:
    raise exc


def _outputs(ctx: WorkerContext, plan: Plan, model: Any, seeds: list[int], images: np.ndarray,
             selection: dict[str, Any] | None, progress: Progress, should_stop: ShouldStop) -> dict:
    """Store one job's images (archive and contact sheet), judge them, write copy and the manifest."""
    job, inp, meta, cond, names, interpreted = plan.job, plan.inp, plan.meta, plan.cond, plan.names, plan.interpreted
    ref, seed, family = meta.ref, plan.seed, IMAGE_FAMILIES[meta.family]
    request = _request(plan, model, seeds)
    if should_stop():
        raise JobCanceled()

    progress(0.6, "saving images")
    prefix = f"jobs/{job.id}/"
    archive_key, sheet_key = f"{prefix}images.zip", f"{prefix}contact_sheet.png"
    placed: list[ArchivedImage] = []
    if len(images):  # none when no candidate reached min_confidence
        archive, placed = png_archive(images)
        scale = 2 if images.shape[1] <= 32 else 1
        ctx.storage.put_many([PutItem(archive_key, archive, "application/zip"),
                              PutItem(sheet_key, lambda: png_bytes(grid(images, 8, scale=scale)), "image/png")])

    height, width = images.shape[1:3] if len(images) else (0, 0)
    output = {
        "model": ref,
        "conditions": names,
        # each image's own URL is served from its byte range of the archive (shared/image_urls.py)
        "images": [{"index": i, "seed": s, "width": int(width), "height": int(height),
                    "archive": {"name": p.name, "offset": p.offset, "length": p.length}}
                   for i, (s, p) in enumerate(zip(seeds, placed, strict=True))],
        **({"images_archive": {"key": archive_key}, "contact_sheet": {"key": sheet_key}} if len(images) else {}),
        "sampling": {"mode": request.mode, **({"spread": inp.sampling.spread} if request.mode == "class_mean" else
                                              {"temperature": inp.temperature}),
                     **family.sampling_settings(model, request.options)},
    }
    if selection is not None:
        output["selection"] = selection
    if plan.batch:
        output["batch"] = plan.batch
    if interpreted is not None:
        output["prompt"] = inp.prompt
        output["interpreted"] = interpreted
    judged = _explain(ctx, meta, cond, images) if len(images) else None
    if judged:
        output["classifier"] = judged.pop("classifier")
        if "nearest_skipped" in judged:
            output["nearest_skipped"] = judged.pop("nearest_skipped")
        for i, image in enumerate(output["images"]):
            image.update({field: values[i] for field, values in judged.items()})
    if inp.descriptions:
        if should_stop():
            raise JobCanceled()
        progress(0.8, f"writing {inp.descriptions} descriptions")
        output["description_model"] = inp.description_model
        for image, copy in zip(output["images"], _descriptions(ctx, inp, meta, names, seeds[:inp.descriptions]),
                               strict=False):
            image["description"] = copy
    write_manifest(ctx.storage, job, output, seeds={"base": seed, "per_image": seeds}, model=ref)
    return output


CANDIDATE_BATCH = 16


def _select(ctx: WorkerContext, meta: ModelVersion, cond: dict[str, int], inp: GenerateImagesInput, seed: int,
            draw: Callable[[list[int]], np.ndarray], should_stop: ShouldStop
            ) -> tuple[list[int], np.ndarray, dict[str, Any]]:
    """Candidates with seeds seed, seed+1, ... in batches until n reach τ for the requested type (by
    the dataset's classifier, calibrated) or n × max_attempts are drawn; the n most confident of
    those at or above τ, most confident first (ties: the lower seed). Deterministic for a seed."""
    judge = ctx.registry.for_dataset(("classifier",), meta.dataset, meta.vocabulary)
    if judge is None:
        raise JobFailure(f"no classifier trained on {meta.dataset} to judge min_confidence", code="no_classifier",
                         field="input.min_confidence")
    head = roles_of(meta)["type"]
    wanted, limit, tau = inp.n, inp.n * inp.max_attempts, float(inp.min_confidence or 0.0)
    judge_model = ctx.load_model(judge.ref)
    seeds: list[int] = []
    batches: list[np.ndarray] = []
    confidence: list[float] = []
    while sum(c >= tau for c in confidence) < wanted and len(seeds) < limit:
        if should_stop():
            raise JobCanceled()
        batch = [seed + len(seeds) + j for j in range(min(max(CANDIDATE_BATCH, wanted), limit - len(seeds)))]
        images = draw(batch)
        probs = classifier.predict(judge_model, to_float(images).to(ctx.device))[head][:, cond[head]]
        seeds += batch
        batches.append(images)
        confidence += [float(p) for p in probs.cpu()]
    candidates = np.concatenate(batches)
    passed = sorted((i for i, c in enumerate(confidence) if c >= tau), key=lambda i: (-confidence[i], seeds[i]))
    keep = passed[:wanted]
    selection = {"min_confidence": tau, "classifier": judge.ref, "condition": head, "drawn": len(seeds),
                 "rejected": len(seeds) - len(passed), "returned": len(keep), "requested": wanted}
    if len(keep) < wanted:
        selection["shortfall"] = (f"only {len(keep)} of {len(seeds)} candidates reached {tau:g} for "
                                  f"{meta.vocabulary[head][cond[head]]}; returning {len(keep)}, not {wanted}")
    return [seeds[i] for i in keep], candidates[keep], selection


def _descriptions(ctx: WorkerContext, inp: GenerateImagesInput, meta: ModelVersion, names: dict[str, str],
                  seeds: list[int]) -> list[dict]:
    """Copy for the images: from the prompt (its unmapped words included), or from the conditions."""
    writer = pinned_model(ctx, None, inp.description_model)
    roles = roles_of(meta)
    attributes = None if inp.prompt else AttributesInput(type=names.get(roles["type"]),
                                                         colour=names.get(roles.get("colour", "")))
    request = request_for(ctx, writer.dataset, inp.prompt, attributes)
    return write_copy(ctx, writer.ref, writer.dataset, request, seeds, lm.SamplingParams())


def _explain(ctx: WorkerContext, meta: ModelVersion, cond: dict[str, int], images: np.ndarray) -> dict | None:
    """Per image, the domain classifier's probability for each requested condition value and the
    five nearest real items of the dataset; None when no classifier was trained on the dataset."""
    judge = ctx.registry.for_dataset(("classifier",), meta.dataset, meta.vocabulary)
    if judge is None:
        return None
    probs, features = classifier.predict_with_features(ctx.load_model(judge.ref), to_float(images).to(ctx.device))
    per_image = [{name: round(float(probs[name][i, index]), 4) for name, index in cond.items() if name in probs}
                 for i in range(len(images))]
    out: dict = {"classifier": judge.ref, "confidence": per_image}
    index = ctx.feature_index(meta.dataset, judge.ref, build=False)
    if index is None:  # built by the classifier's train job or an augment run, not on the interactive queue
        out["nearest_skipped"] = f"no nearest-item index for {judge.ref} on {meta.dataset} yet"
    else:
        out["nearest"] = [[n.public() for n in row] for row in index.nearest(features.cpu().numpy(), NEAREST)]
    return out

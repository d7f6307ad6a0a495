"""The `describe` job: product copy for a prompt or explicit attributes from a pinned language
model version, n candidates in one batch (one seed each), scored and ranked best first, written to
jobs/<id>/descriptions.json with the manifest. Queued describe jobs for the same version whose
prompts are as long in tokens are written in the same generation pass (worker/batching.py); each
job's copy is the copy it gets alone."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from shared.errors import JobCanceled
from shared.schemas import DescribeInput, Job, JobType
from worker.batching import companions, finish_companions, run_together
from worker.context import WorkerContext
from worker.describing import CopyRequest, ranked, request_for, sampling_params, scored, text_request, write_copy
from worker.handlers.common import Progress, ShouldStop, write_manifest
from worker.handlers.conditioning import pinned_model
from worker.models import lm


@dataclass
class Plan:
    """One job's request, read before generating."""

    job: Job
    inp: DescribeInput
    ref: str
    dataset: str
    request: CopyRequest
    seed: int
    batch: dict[str, Any] | None = None  # set when its copy came from a pass shared with other jobs

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.inp.n)]

    @property
    def text(self) -> lm.TextRequest:
        return text_request(self.request, self.seeds, self.inp.opening)


def _plan(ctx: WorkerContext, job: Job, progress: Progress) -> Plan:
    inp = DescribeInput(**job.input)
    meta = pinned_model(ctx, job, inp.model)
    progress(0.05, "reading the request")
    request = request_for(ctx, meta.dataset, inp.prompt, inp.attributes)
    return Plan(job, inp, meta.ref, meta.dataset, request, inp.seed if inp.seed is not None else 0)


def describe(ctx: WorkerContext, job: Job, progress: Progress, should_stop: ShouldStop) -> dict:
    plan = _plan(ctx, job, progress)
    if should_stop():
        raise JobCanceled()
    model = ctx.load_model(plan.ref)
    params = sampling_params(plan.inp)
    room = ctx.settings.batch_max_descriptions - plan.inp.n
    ready: dict[str, Plan] = {}  # plans worked out while deciding who joins, kept for the pass
    fits = partial(_joins, ctx, leader=plan, length=lm.prompt_length(model, plan.text), model=model, ready=ready)
    with companions(ctx, job, fits, room) if room > 0 else nullcontext([]) as others:
        joined = [(other, ready[other.job.id]) for other in others]
        progress(0.1, f"writing {plan.inp.n} descriptions with {plan.ref}"
                 + (f" with {len(joined)} other jobs" if joined else ""))
        written = _write_together(model, [plan] + [p for _, p in joined], params, ctx.device)
        finish_companions(ctx, joined, written[1:], _outputs)
    return _outputs(ctx, plan, written[0], progress, should_stop)


def _joins(ctx: WorkerContext, other: Job, *, leader: Plan, length: int, model: lm.LanguageModel,
           ready: dict[str, Plan]) -> int | None:
    """How many rows a queued job would add to the leader's pass, or None when it cannot join:
    another version, other sampling settings, or a prompt of another length in tokens (rows are
    never padded, so that each row's text is the one it gets alone)."""
    if other.type != JobType.DESCRIBE or other.model != leader.job.model:
        return None
    try:
        if sampling_params(DescribeInput(**other.input)) != sampling_params(leader.inp):
            return None  # checked before its request is read: the cheap test first
        theirs = _plan(ctx, other, lambda *_: None)
        if lm.prompt_length(model, theirs.text) != length:
            return None
    except SoftTimeLimitExceeded:  # the leader's time is up, not a fault of this job
        raise
    except Exception:  # it fails the same way when it runs alone, and says why there
        return None
    ready[other.id] = theirs
    return theirs.inp.n


def _write_together(model: lm.LanguageModel, plans: list[Plan], params: lm.SamplingParams, device: Any
                    ) -> list[list[str] | None]:
    """One generation pass for every plan (each gets the copy it gets alone)."""
    return run_together(plans, lambda: lm.generate_many(model, [p.text for p in plans], params, device),
                        {"leader": plans[0].job.id, "jobs": len(plans), "descriptions": sum(p.inp.n for p in plans)})


def _outputs(ctx: WorkerContext, plan: Plan, texts: list[str] | None, progress: Progress,
             should_stop: ShouldStop) -> dict:
    """Score, rank and store one job's copy (written here when no shared pass wrote it)."""
    job, inp, request = plan.job, plan.inp, plan.request
    if should_stop():
        raise JobCanceled()
    if texts is None:
        progress(0.1, f"writing {inp.n} descriptions with {plan.ref}")
        written = write_copy(ctx, plan.ref, plan.dataset, request, plan.seeds, sampling_params(inp), inp.opening)
    else:
        written = scored(ctx, plan.dataset, request, plan.seeds, texts)
    candidates = ranked(written)
    key = f"jobs/{job.id}/descriptions.json"
    output = {
        "model": plan.ref, "context": request.context, "requested": request.requested.public(),
        "opening": request.opening() if inp.opening == "attributes" else "",
        "descriptions": candidates,
        "summary": {"adherent": sum(c["adherence"]["adherent"] for c in candidates),
                    "copies": sum(c["copy"]["flagged"] for c in candidates), "n": len(candidates)},
    }
    if inp.prompt is not None:
        output |= {"prompt": inp.prompt, "interpreted": request.interpreted}
    if plan.batch:
        output["batch"] = plan.batch
    ctx.storage.put_json(key, candidates)
    output["file"] = {"key": key}
    write_manifest(ctx.storage, job, output, seeds={"base": plan.seed, "per_description": plan.seeds}, model=plan.ref)
    return output

"""The `describe` job: product copy for a prompt or explicit attributes from a pinned language
model version, n candidates in one batch (one seed each), scored and ranked best first, written to
jobs/<id>/descriptions.json with the manifest."""

from __future__ import annotations

from shared.errors import JobCanceled
from shared.schemas import DescribeInput, Job
from worker.context import WorkerContext
from worker.describing import ranked, request_for, sampling_params, write_copy
from worker.handlers.common import Progress, ShouldStop, write_manifest
from worker.handlers.conditioning import pinned_model


def describe(ctx: WorkerContext, job: Job, progress: Progress, should_stop: ShouldStop) -> dict:
    inp = DescribeInput(**job.input)
    meta = pinned_model(ctx, job, inp.model)
    seed = inp.seed if inp.seed is not None else 0
    seeds = [seed + i for i in range(inp.n)]
    progress(0.05, "reading the request")
    request = request_for(ctx, meta.dataset, inp.prompt, inp.attributes)
    if should_stop():
        raise JobCanceled()
    progress(0.1, f"writing {inp.n} descriptions with {meta.ref}")
    candidates = ranked(write_copy(ctx, meta.ref, meta.dataset, request, seeds, sampling_params(inp), inp.opening))
    key = f"jobs/{job.id}/descriptions.json"
    output = {
        "model": meta.ref, "context": request.context, "requested": request.requested.public(),
        "opening": request.opening() if inp.opening == "attributes" else "",
        "descriptions": candidates,
        "summary": {"adherent": sum(c["adherence"]["adherent"] for c in candidates),
                    "copies": sum(c["copy"]["flagged"] for c in candidates), "n": len(candidates)},
    }
    if inp.prompt is not None:
        output |= {"prompt": inp.prompt, "interpreted": request.interpreted}
    ctx.storage.put_json(key, candidates)
    output["file"] = {"key": key}
    write_manifest(ctx.storage, job, output, seeds={"base": seed, "per_description": seeds}, model=meta.ref)
    return output

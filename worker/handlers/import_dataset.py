"""The `import_dataset` job: build a dataset (the demo catalog, Fashion-MNIST or a merchandiser's
upload) into datasets/<name>/ and report what was imported, skipped and left out of training."""

from __future__ import annotations

from shared.schemas import ImportDatasetInput, Job
from worker.context import WorkerContext
from worker.datasets.store import import_dataset as build_dataset
from worker.datasets.store import meta_key, prefix
from worker.handlers.common import Progress, ShouldStop, write_manifest


def import_dataset(ctx: WorkerContext, job: Job, progress: Progress, should_stop: ShouldStop) -> dict:
    spec = ImportDatasetInput(**job.input)
    meta = build_dataset(spec, ctx.storage, ctx.settings, progress)
    ctx.datasets.forget(spec.name)  # a re-import replaces what this process had loaded
    vocabulary = meta.get("vocabulary") or {}
    files = ("train.jsonl", "test.jsonl") if spec.format == "descriptions" else ("train.npz", "test.npz")
    output = {
        "dataset": spec.name,
        "format": spec.format,
        "sizes": meta["sizes"],
        "rows": meta.get("rows"),
        "skipped": meta.get("skipped", {}),
        "meta": {"key": meta_key(spec.name)},
        "files": [{"key": prefix(spec.name) + name} for name in files],
    }
    if vocabulary:
        output.update(classes=len(next(iter(vocabulary.values()))),
                      vocabulary_sizes={k: len(v) for k, v in vocabulary.items()},
                      skipped_examples=meta.get("skipped_examples", {}), below_minimum=meta.get("below_minimum"))
    if "cleaning" in meta:
        output["cleaning"] = meta["cleaning"]
    write_manifest(ctx.storage, job, output, seeds={}, model=None)
    return output

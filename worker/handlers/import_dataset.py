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
    output = {
        "dataset": spec.name,
        "sizes": meta["sizes"],
        "classes": len(next(iter(meta["vocabulary"].values()))),
        "vocabulary_sizes": {k: len(v) for k, v in meta["vocabulary"].items()},
        "rows": meta.get("rows"),
        "skipped": meta.get("skipped", {}),
        "skipped_examples": meta.get("skipped_examples", {}),
        "below_minimum": meta.get("below_minimum"),
        "meta": {"key": meta_key(spec.name)},
        "files": [{"key": prefix(spec.name) + name} for name in ("train.npz", "test.npz")],
    }
    write_manifest(ctx.storage, job, output, seeds={}, model=None)
    return output

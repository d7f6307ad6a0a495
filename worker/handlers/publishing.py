"""The one way a train job publishes a model version, whatever the family: weights, config, metrics,
loss curve and the family's own files under models/<family>/<version>/, then `model.json` last (a
version is complete once it exists), the promotion gate, the manifest, and the resume checkpoint
removed."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import torch

from shared.registry import model_prefix, parse_ref
from shared.schemas import Job, TrainInput
from shared.storage import PutItem
from worker.context import WorkerContext
from worker.handlers.common import publish, write_manifest
from worker.plots import loss_curve_png
from worker.training.common import TrainParams, TrainResult


@dataclass
class Version:
    """What a family's train handler hands over to be published."""

    ref: str
    checkpoint: dict[str, Any]  # the family's to_checkpoint(model)
    config: dict[str, Any]  # config.json: the model config, the training parameters, the recipe
    metrics: dict[str, Any]  # metrics.json, beside the history this adds
    headline: dict[str, Any]  # the figures listed with the version (GET /v1/models) and compared by promotion
    vocabulary: dict[str, list[str]]
    curves: dict[str, str]  # loss-curve label -> history key
    curve_unit: str
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # name -> (data, content type)
    documents: dict[str, Any] = field(default_factory=dict)  # name.json -> JSON
    artifacts: dict[str, Any] = field(default_factory=dict)  # extra output artifacts, beyond the common ones
    summary: dict[str, Any] = field(default_factory=dict)  # extra model.json fields (counts, roles, ...)
    output: dict[str, Any] = field(default_factory=dict)  # extra job output fields


def publish_version(ctx: WorkerContext, job: Job, inp: TrainInput, params: TrainParams, result: TrainResult,
                    version: Version, after_register: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write the version, register it through the promotion gate and return the job's output.
    `after_register` runs once the version is registered (the classifier builds its feature index)
    and returns extra artifacts."""
    family, number = parse_ref(version.ref)
    prefix = model_prefix(family, number)
    weights = io.BytesIO()
    torch.save(version.checkpoint, weights)
    curve = loss_curve_png(result.history, f"{version.ref} on {inp.dataset}", version.curves, version.curve_unit)
    files = {"model.pt": (weights.getvalue(), "application/octet-stream"), "loss_curve.png": (curve, "image/png"),
             **version.files}
    ctx.storage.put_many([PutItem(prefix + name, data, kind) for name, (data, kind) in files.items()])
    ctx.storage.put_json(prefix + "config.json", {**version.config, "preset": inp.preset.value})
    metrics = {"final": result.final, "history": result.history, "resumed_from_epoch": result.resumed_from_epoch,
               "stopped_early": result.stopped_early, "device": str(ctx.device), **version.metrics}
    ctx.storage.put_json(prefix + "metrics.json", metrics)
    for name, document in version.documents.items():
        ctx.storage.put_json(prefix + name, document)
    train_seconds = round(sum(row.get("seconds", 0.0) for row in result.history), 1)
    summary = {"family": family, "version": number, "ref": version.ref, "dataset": inp.dataset,
               "created_at": datetime.now(UTC).isoformat(), "job_id": job.id,
               "metrics": {**version.headline, "epochs": len(result.history),
                           **({"train_seconds": train_seconds} if train_seconds else {})},
               "vocabulary": version.vocabulary, **version.summary}
    ctx.storage.put_json(prefix + "model.json", summary)  # written last: the version is complete
    promotion = publish(ctx, summary, inp.promote)
    extra = after_register() if after_register else {}
    artifacts = {"weights": {"key": prefix + "model.pt"}, "loss_curve": {"key": prefix + "loss_curve.png"},
                 "metrics": {"key": prefix + "metrics.json"}, "config": {"key": prefix + "config.json"},
                 **version.artifacts, **extra}
    output = {"model": version.ref, "active": promotion["active"], "promotion": promotion,
              "metrics": summary["metrics"], **version.output,
              **({"stopped_early": result.stopped_early} if result.stopped_early else {}),
              "artifacts": artifacts}
    write_manifest(ctx.storage, job, output, seeds={"train": params.seed}, model=version.ref)
    ctx.storage.delete(f"jobs/{job.id}/checkpoint.pt")
    return output

"""Pieces every job handler uses: progress ranges and the manifest written next to the outputs."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import torch

from shared.errors import JobFailure
from shared.jobs import collect_keys
from shared.registry import model_prefix, parse_ref
from shared.schemas import Job, TrainInput
from shared.storage import Storage
from worker.context import WorkerContext
from worker.promotion import decide
from worker.training.common import TrainParams

Progress = Callable[[float, str], None]
ShouldStop = Callable[[], bool]


def scaled(progress: Progress, start: float, end: float) -> Progress:
    """Map a sub-step's 0..1 onto start..end of the whole job."""
    return lambda fraction, message: progress(start + (end - start) * fraction, message)


def claim_model_version(ctx: WorkerContext, job: Job, family: str) -> str:
    """The version this training job produces (allocated once, the same on every rerun), refused when
    object storage already holds that version from another job: Redis lost its counter, and writing
    would overwrite a model. The reaper restores the registry and counters from storage."""
    ref = ctx.store.model_version_for(job.id, family)
    fam, version = parse_ref(ref)
    key = model_prefix(fam, version) + "model.json"
    if ctx.storage.exists(key) and ctx.storage.get_json(key).get("job_id") != job.id:
        raise JobFailure(f"{ref} already exists in object storage from another job: the model registry is behind "
                         "storage (was Redis reset?); it is restored within a reaper interval, submit again",
                         code="model_version_conflict")
    return ref


def manifest_key(job_id: str) -> str:
    return f"jobs/{job_id}/manifest.json"


def write_manifest(storage: Storage, job: Job, output: dict, *, seeds: dict[str, Any], model: str | None,
                   metrics: dict | None = None) -> None:
    """jobs/<id>/manifest.json: enough to reproduce the job. Written after every output, so a
    manifest means the outputs are complete; a rerun overwrites the same keys."""
    manifest = {
        "job_id": job.id, "type": job.type.value, "input": job.input, "model": model, "seeds": seeds,
        "objects": collect_keys(output), "metrics": metrics or output.get("metrics"),
        "written_at": datetime.now(UTC).isoformat(),
    }
    storage.put_json(manifest_key(job.id), manifest)
    output["manifest"] = {"key": manifest_key(job.id)}


class StorageCheckpoint:
    """Per-epoch training state in object storage, so a redelivered job resumes instead of restarting."""

    def __init__(self, storage: Storage, key: str) -> None:
        self.storage, self.key = storage, key

    def load(self) -> dict[str, Any] | None:
        if not self.storage.exists(self.key):
            return None
        return torch.load(io.BytesIO(self.storage.get(self.key)), map_location="cpu", weights_only=True)

    def save(self, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.storage.put(self.key, buffer.getvalue())


def publish(ctx: WorkerContext, summary: dict[str, Any], requested: str) -> dict[str, Any]:
    """Register a finished version through the promotion gate; returns {active, reason}. The gate's
    verdict is applied only if the version it compared against is still the active one (checked in
    the same Redis step); when two trainings finish together, the later one is judged again against
    the winner, so the worse can never end up active."""
    for _ in range(PROMOTION_ROUNDS):
        current = ctx.registry.active(summary["family"])
        decision = decide(summary, current, requested)
        conditional = requested == "auto" and decision.mode == "always" and current is not None
        active = ctx.registry.register(summary, activate=decision.mode,
                                       instead_of=current.version if conditional and current else None)
        if active is None:
            continue  # another version became active between the reading and the writing
        if decision.mode == "auto" and not active:
            now = ctx.registry.active(summary["family"])
            if now is not None and now.ref == summary["ref"]:  # a rerun of the job that made it active
                return {"active": True, "reason": decision.reason}
            continue  # the family's first version, but another was registered first: compare with it
        return {"active": active, "reason": decision.reason}
    return {"active": False, "reason": "the active version kept changing while this one was compared; it stays "
                                       "inactive (activate it by hand if it should be)"}


PROMOTION_ROUNDS = 5


def train_params(inp: TrainInput, defaults: dict[str, Any], mixed_precision: str = "auto") -> TrainParams:
    """The job's training parameters: what it asked for, else the preset's; the precision is the
    worker's setting (ATELIER_MIXED_PRECISION)."""
    return TrainParams(epochs=inp.epochs or defaults["epochs"], batch_size=inp.batch_size or defaults["batch_size"],
                       learning_rate=inp.learning_rate or defaults["learning_rate"],
                       seed=inp.seed if inp.seed is not None else 0,
                       max_train_examples=inp.max_train_examples or defaults.get("max_train_examples"),
                       max_eval_examples=defaults.get("max_eval_examples"),
                       max_minutes=inp.max_minutes or defaults.get("max_minutes"), mixed_precision=mixed_precision)

"""The `train` job: import the dataset if needed, train, and publish a model version under
models/<family>/<version>/ (weights, config, metrics, per-class sample grids, loss curve)."""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

from shared.registry import model_prefix, parse_ref
from shared.schemas import Job, TrainInput
from shared.storage import PutItem, Storage
from worker.context import WorkerContext
from worker.datasets.store import load_dataset
from worker.handlers.common import Progress, ShouldStop, scaled, write_manifest
from worker.images import grid, png_bytes, to_uint8
from worker.models import cvae
from worker.plots import loss_curve_png
from worker.training.cvae_trainer import TrainParams, train_cvae

log = logging.getLogger(__name__)

SAMPLES_PER_CLASS = 16


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


def build_config(inp: TrainInput, image_size: int, channels: int,
                 vocabulary: dict[str, list[str]]) -> tuple[cvae.CVAEConfig, TrainParams]:
    preset = cvae.PRESETS[inp.preset.value]
    config = replace(cvae.CVAEConfig(image_size=image_size, channels=channels,
                                     conditions={k: len(v) for k, v in vocabulary.items()}), **preset["model"])
    defaults = preset["train"]
    params = TrainParams(
        epochs=inp.epochs or defaults["epochs"],
        batch_size=inp.batch_size or defaults["batch_size"],
        learning_rate=inp.learning_rate or defaults["learning_rate"],
        seed=inp.seed if inp.seed is not None else 0,
        max_train_examples=inp.max_train_examples or defaults.get("max_train_examples"),
        max_eval_examples=defaults.get("max_eval_examples"),
    )
    return config, params


def sample_grids(model: cvae.CVAE, vocabulary: dict[str, list[str]], device: torch.device,
                 seed: int) -> dict[str, bytes]:
    """A grid of samples per class and one overview grid (a row per class)."""
    per_class = [to_uint8(cvae.sample(model, {"class": index}, [seed + i for i in range(SAMPLES_PER_CLASS)],
                                      device=device)) for index in range(len(vocabulary["class"]))]
    out = {f"samples/{i:02d}.png": png_bytes(grid(images, 8, scale=2)) for i, images in enumerate(per_class)}
    overview = grid(np.concatenate([images[:8] for images in per_class]), 8, scale=2)
    out["samples/all_classes.png"] = png_bytes(overview)
    return out


def train(ctx: WorkerContext, job: Job, progress: Progress, should_stop: ShouldStop) -> dict:
    inp = TrainInput(**job.input)
    ref = ctx.store.model_version_for(job.id, inp.family.value)  # stable across reruns
    family, version = parse_ref(ref)
    dataset = ctx.datasets.get_or_load(
        inp.dataset, lambda: load_dataset(inp.dataset, ctx.storage, ctx.settings, scaled(progress, 0.0, 0.05)))
    config, params = build_config(inp, dataset.image_size, dataset.channels, dataset.vocabulary)
    device = ctx.device
    result = train_cvae(config, params, dataset.train, dataset.test, device=device,
                        progress=scaled(progress, 0.05, 0.9), should_stop=should_stop,
                        checkpoint=StorageCheckpoint(ctx.storage, f"jobs/{job.id}/checkpoint.pt"))
    progress(0.92, "writing the model version")
    prefix = model_prefix(family, version)
    weights = io.BytesIO()
    torch.save(cvae.to_checkpoint(result.model), weights)
    metrics = {"final": result.final, "history": result.history, "resumed_from_epoch": result.resumed_from_epoch,
               "train_examples": min(len(dataset.train), params.max_train_examples or len(dataset.train)),
               "device": str(device)}
    samples = sample_grids(result.model, dataset.vocabulary, device, params.seed)
    files = {"model.pt": (weights.getvalue(), "application/octet-stream"),
             "loss_curve.png": (loss_curve_png(result.history, f"{ref} on {inp.dataset}"), "image/png"),
             **{name: (data, "image/png") for name, data in samples.items()}}
    ctx.storage.put_many([PutItem(prefix + name, data, kind) for name, (data, kind) in files.items()])
    ctx.storage.put_json(prefix + "config.json", {"model": asdict(config), "train": asdict(params),
                                                  "preset": inp.preset.value})
    ctx.storage.put_json(prefix + "metrics.json", metrics)
    summary = {"family": family, "version": version, "ref": ref, "dataset": inp.dataset,
               "created_at": datetime.now(UTC).isoformat(), "job_id": job.id,
               "metrics": {"test_loss": result.final.get("test_loss"), "train_loss": result.final.get("train_loss"),
                           "epochs": len(result.history)},
               "vocabulary": dataset.vocabulary}
    ctx.storage.put_json(prefix + "model.json", summary)  # written last: the version is complete
    active = ctx.registry.register(summary, activate=inp.activate)
    artifacts = {"weights": {"key": prefix + "model.pt"}, "loss_curve": {"key": prefix + "loss_curve.png"},
                 "sample_grid": {"key": prefix + "samples/all_classes.png"},
                 "class_samples": [{"class": name, "key": f"{prefix}samples/{i:02d}.png"}
                                   for i, name in enumerate(dataset.vocabulary["class"])],
                 "metrics": {"key": prefix + "metrics.json"}, "config": {"key": prefix + "config.json"}}
    output = {"model": ref, "active": active, "metrics": summary["metrics"], "artifacts": artifacts}
    write_manifest(ctx.storage, job, output, seeds={"train": params.seed}, model=ref)
    ctx.storage.delete(f"jobs/{job.id}/checkpoint.pt")
    return output

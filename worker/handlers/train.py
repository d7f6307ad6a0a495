"""The `train` job: import the dataset if needed, train, and publish a model version under
models/<family>/<version>/ (weights, config, metrics, per-class sample grids, loss curve)."""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, fields, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

from shared.registry import model_prefix, parse_ref
from shared.schemas import Job, TrainInput
from shared.storage import PutItem
from worker.context import WorkerContext
from worker.datasets.base import ImageDataset
from worker.datasets.store import counts_of
from worker.evaluation import blind_judge, evaluate_generator
from worker.handlers.common import (
    Progress,
    ShouldStop,
    StorageCheckpoint,
    claim_model_version,
    publish,
    scaled,
    train_params,
    write_manifest,
)
from worker.handlers.train_classifier import train_domain_classifier
from worker.handlers.train_lm import train_language_model
from worker.images import grid, png_bytes, to_uint8
from worker.models import IMAGE_FAMILIES, ImageFamily
from worker.plots import loss_curve_png
from worker.training.common import TrainParams

log = logging.getLogger(__name__)

SAMPLES_PER_CLASS = 16


def build_config(family: ImageFamily, inp: TrainInput, dataset: ImageDataset) -> tuple[Any, TrainParams]:
    preset = family.presets[inp.preset.value]
    base: dict[str, Any] = {"image_size": dataset.image_size, "channels": dataset.channels,
                            "conditions": {k: len(v) for k, v in dataset.vocabulary.items()}}
    if "mean_condition" in {f.name for f in fields(family.config)}:
        base["mean_condition"] = type_condition(dataset)
    config = replace(family.config(**base), **preset["model"])
    defaults = preset["train"]
    params = train_params(inp, defaults)
    return config, params


def type_condition(dataset: ImageDataset) -> str:
    return (dataset.roles or {}).get("type") or sorted(dataset.vocabulary)[0]


def class_conditions(dataset: ImageDataset) -> list[dict[str, int]]:
    """One condition set per product type, each with that type's most common value of the others."""
    kind = type_condition(dataset)
    labels = dataset.train.conditions[kind]
    out = []
    for index in range(len(dataset.vocabulary[kind])):
        rows = labels == index
        cond = {kind: index}
        for other, values in dataset.train.conditions.items():
            if other != kind:
                counts = np.bincount(values[rows], minlength=len(dataset.vocabulary[other]))
                cond[other] = int(counts.argmax())
        out.append(cond)
    return out


def joint_counts(dataset: ImageDataset) -> dict[str, dict[str, int]] | None:
    """Training images per (type, colour): the colour used when a prompt names none."""
    roles = dataset.roles or {}
    kind, colour = roles.get("type"), roles.get("colour")
    if not kind or not colour:
        return None
    out: dict[str, dict[str, int]] = {}
    types, colours = dataset.train.conditions[kind], dataset.train.conditions[colour]
    for t, c in zip(types.tolist(), colours.tolist(), strict=True):
        row = out.setdefault(dataset.vocabulary[kind][t], {})
        name = dataset.vocabulary[colour][c]
        row[name] = row.get(name, 0) + 1
    return out


def sample_grids(family: ImageFamily, model: Any, dataset: ImageDataset, device: torch.device,
                 seed: int) -> dict[str, bytes]:
    """A grid of samples per class and one overview grid (a row per class)."""
    scale = 2 if dataset.image_size <= 32 else 1
    seeds = [seed + i for i in range(SAMPLES_PER_CLASS)]
    mode = family.sampling_mode(model)
    per_class = [to_uint8(family.module.sample(model, cond, seeds, device=device, mode=mode))
                 for cond in class_conditions(dataset)]
    out = {f"samples/{i:03d}.png": png_bytes(grid(images, 8, scale=scale)) for i, images in enumerate(per_class)}
    out["samples/all_classes.png"] = png_bytes(grid(np.concatenate([images[:8] for images in per_class]), 8,
                                                    scale=scale))
    return out


def train(ctx: WorkerContext, job: Job, progress: Progress, should_stop: ShouldStop) -> dict:
    inp = TrainInput(**job.input)
    if inp.family.value == "lm":
        return train_language_model(ctx, job, progress, should_stop)
    dataset = ctx.image_dataset(inp.dataset, scaled(progress, 0.0, 0.05))
    if inp.family.value == "classifier":
        return train_domain_classifier(ctx, job, progress, should_stop, dataset, type_condition(dataset))
    family = IMAGE_FAMILIES[inp.family.value]
    ref = claim_model_version(ctx, job, inp.family.value)  # stable across reruns
    family_name, version = parse_ref(ref)
    config, params = build_config(family, inp, dataset)
    device = ctx.device
    result = family.train(config, params, dataset.train, dataset.test, device=device,
                          progress=scaled(progress, 0.05, 0.9), should_stop=should_stop,
                          checkpoint=StorageCheckpoint(ctx.storage, f"jobs/{job.id}/checkpoint.pt"),
                          stratify_by=type_condition(dataset))
    progress(0.92, "writing the model version")
    prefix = model_prefix(family_name, version)
    weights = io.BytesIO()
    torch.save(family.module.to_checkpoint(result.model), weights)
    metrics = {"final": result.final, "history": result.history, "resumed_from_epoch": result.resumed_from_epoch,
               "train_examples": min(len(dataset.train), params.max_train_examples or len(dataset.train)),
               "device": str(device)}
    progress(0.93, "evaluating with the domain classifier")
    evaluation = evaluate_version(ctx, family, result.model, dataset, inp, params.seed)
    metrics["evaluation"] = evaluation
    samples = sample_grids(family, result.model, dataset, device, params.seed)
    curve = loss_curve_png(result.history, f"{ref} on {inp.dataset}", family.curves, family.curve_unit)
    files = {"model.pt": (weights.getvalue(), "application/octet-stream"), "loss_curve.png": (curve, "image/png"),
             **{name: (data, "image/png") for name, data in samples.items()}}
    ctx.storage.put_many([PutItem(prefix + name, data, kind) for name, (data, kind) in files.items()])
    ctx.storage.put_json(prefix + "config.json", {"model": asdict(config), "train": asdict(params),
                                                  "preset": inp.preset.value})
    ctx.storage.put_json(prefix + "metrics.json", metrics)
    summary = {"family": family_name, "version": version, "ref": ref, "dataset": inp.dataset,
               "created_at": datetime.now(UTC).isoformat(), "job_id": job.id,
               "metrics": {**{k: v for k, v in result.final.items() if k != "epoch"}, "epochs": len(result.history),
                           **headline(evaluation)},
               "vocabulary": dataset.vocabulary, "counts": counts_of(dataset),
               "roles": dataset.roles or {"type": type_condition(dataset)}, "joint_counts": joint_counts(dataset)}
    ctx.storage.put_json(prefix + "model.json", summary)  # written last: the version is complete
    promotion = publish(ctx, summary, inp.promote)
    kind = type_condition(dataset)
    artifacts = {"weights": {"key": prefix + "model.pt"}, "loss_curve": {"key": prefix + "loss_curve.png"},
                 "sample_grid": {"key": prefix + "samples/all_classes.png"},
                 "class_samples": [{"class": name, "key": f"{prefix}samples/{i:03d}.png"}
                                   for i, name in enumerate(dataset.vocabulary[kind])],
                 "metrics": {"key": prefix + "metrics.json"}, "config": {"key": prefix + "config.json"}}
    output = {"model": ref, "active": promotion["active"], "promotion": promotion,
              "metrics": summary["metrics"], "evaluation": evaluation,
              "artifacts": artifacts}
    write_manifest(ctx.storage, job, output, seeds={"train": params.seed}, model=ref)
    ctx.storage.delete(f"jobs/{job.id}/checkpoint.pt")
    return output


EVAL_IMAGES = {"tiny": 128, "cpu": 1000, "gpu": 2000}  # generated images compared with as many held-out ones


def evaluate_version(ctx: WorkerContext, family: ImageFamily, model: Any, dataset: ImageDataset, inp: TrainInput,
                     seed: int) -> dict[str, Any]:
    """classifier-FID/KID, the real-vs-real floor and class adherence, or why there are none."""
    judge = ctx.registry.for_dataset(("classifier",), dataset.name, dataset.vocabulary)
    if judge is None:
        return {"skipped": f"no classifier trained on {dataset.name}: submit a train job with family classifier "
                           "to evaluate its generative models"}
    mode = family.sampling_mode(model)

    def sample(cond: dict[str, int], seeds: list[int]) -> torch.Tensor:
        return family.module.sample(model, cond, seeds, device=ctx.device, mode=mode)

    result = evaluate_generator(sample, ctx.load_model(judge.ref), dataset.train, dataset.test, dataset.vocabulary,
                                type_condition(dataset), max_images=EVAL_IMAGES[inp.preset.value], seed=seed,
                                device=ctx.device)
    kind = type_condition(dataset)
    accuracy = judge.metrics.get(f"accuracy_{kind}", judge.metrics.get("accuracy"))
    blind = blind_judge(result, accuracy, ctx.settings.judge_min_accuracy)
    return {"classifier": judge.ref, "judge": {"ref": judge.ref, "held_out_accuracy": accuracy,
                                               "min_accuracy": ctx.settings.judge_min_accuracy},
            "fid_verdict": blind is None, **({"fid_withheld": blind} if blind else {}),
            "sampling": mode, **result.public()}


def headline(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The evaluation figures listed with the version in GET /v1/models. FID and KID only when the
    judge can give a verdict; otherwise why not, so promotion falls back to the family's own metric."""
    if "fid" not in evaluation:
        return {}
    adherence = {f"adherence_{k}": v for k, v in evaluation["adherence"].items()}
    if not evaluation.get("fid_verdict", True):
        return {"fid_withheld": evaluation["fid_withheld"], **adherence}
    return {"fid": evaluation["fid"], "kid": evaluation["kid"], "fid_floor": evaluation["floor"]["fid"], **adherence}

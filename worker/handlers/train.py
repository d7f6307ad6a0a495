"""The `train` job: import the dataset if needed, train, and publish a model version under
models/<family>/<version>/ (weights, config, metrics, per-class sample grids, loss curve)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from shared.errors import ModelUnloadable
from shared.families import facts
from shared.registry import model_prefix, parse_ref
from shared.schemas import Job, TrainInput
from worker.context import WorkerContext
from worker.datasets.base import ImageDataset
from worker.datasets.store import counts_of
from worker.evaluation import blind_judge, evaluate_generator
from worker.families import IMAGE_FAMILIES, ImageFamily, SampleRequest, type_condition
from worker.handlers.common import Progress, ShouldStop, StorageCheckpoint, claim_model_version, scaled, train_params
from worker.handlers.publishing import Version, publish_version
from worker.handlers.train_classifier import train_domain_classifier
from worker.handlers.train_lm import train_language_model
from worker.images import grid, png_bytes, to_uint8
from worker.plots import latent_map_png
from worker.training.common import TrainParams, batches

log = logging.getLogger(__name__)


def build_config(family: ImageFamily, inp: TrainInput, dataset: ImageDataset,
                 mixed_precision: str = "auto") -> tuple[Any, TrainParams]:
    config = family.config_for(dataset, inp.preset.value)
    return config, train_params(inp, family.presets[inp.preset.value]["train"], mixed_precision)


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
                 seed: int, per_class: int = 16) -> dict[str, bytes]:
    """A grid of samples per class and one overview grid (a row per class)."""
    scale = 2 if dataset.image_size <= 32 else 1
    seeds = [seed + i for i in range(per_class)]
    per_class = [to_uint8(family.sample(model, SampleRequest(cond, seeds), device))
                 for cond in class_conditions(dataset)]
    out = {f"samples/{i:03d}.png": png_bytes(grid(images, 8, scale=scale)) for i, images in enumerate(per_class)}
    out["samples/all_classes.png"] = png_bytes(grid(np.concatenate([images[:8] for images in per_class]), 8,
                                                    scale=scale))
    return out


def train(ctx: WorkerContext, job: Job, progress: Progress, should_stop: ShouldStop) -> dict:
    inp = TrainInput(**job.input)
    if facts(inp.family.value).trains_on == "text":
        return train_language_model(ctx, job, progress, should_stop)
    dataset = ctx.image_dataset(inp.dataset, scaled(progress, 0.0, 0.05))
    if facts(inp.family.value).role == "classifier":
        return train_domain_classifier(ctx, job, progress, should_stop, dataset, type_condition(dataset))
    return train_generator(ctx, job, inp, dataset, progress, should_stop)


def train_generator(ctx: WorkerContext, job: Job, inp: TrainInput, dataset: ImageDataset, progress: Progress,
                    should_stop: ShouldStop) -> dict:
    """Any image family, through its contract: train, evaluate with the domain classifier, draw the
    per-class grids, publish."""
    family = IMAGE_FAMILIES[inp.family.value]
    ref = claim_model_version(ctx, job, family.name)  # stable across reruns
    config, params = build_config(family, inp, dataset, ctx.settings.mixed_precision)
    recipe = family.recipe_for(inp.preset.value)
    result = family.train(config, params, dataset.train, dataset.test, device=ctx.device,
                          progress=scaled(progress, 0.05, 0.9), should_stop=should_stop,
                          checkpoint=StorageCheckpoint(ctx.storage, f"jobs/{job.id}/checkpoint.pt"),
                          stratify_by=type_condition(dataset), recipe=recipe)
    progress(0.92, "evaluating with the domain classifier")
    evaluation = evaluate_version(ctx, family, result.model, dataset, inp, params.seed)
    samples = sample_grids(family, result.model, dataset, ctx.device, params.seed,
                           family.samples_per_class(inp.preset.value))
    prefix = model_prefix(*parse_ref(ref))
    kind = type_condition(dataset)
    extra: dict[str, Any] = {}
    if family.encode is not None:
        progress(0.95, "projecting the held-out latents (t-SNE)")
        samples["latent_map.png"] = latent_map(family.encode, result.model, dataset, ref, ctx.device, params.seed)
        extra["latent_map"] = {"key": prefix + "latent_map.png"}
    version = Version(
        ref=ref, checkpoint=family.checkpoint(result.model),
        config={"model": asdict(config), "train": asdict(params),
                **({"recipe": asdict(recipe)} if recipe is not None else {})},
        metrics={"evaluation": evaluation,
                 "train_examples": min(len(dataset.train), params.max_train_examples or len(dataset.train))},
        headline={**{k: v for k, v in result.final.items() if k not in ("epoch", "seconds")},
                  **headline(evaluation)},
        vocabulary=dataset.vocabulary, curves=family.curves, curve_unit=family.curve_unit,
        files={name: (data, "image/png") for name, data in samples.items()},
        artifacts={"sample_grid": {"key": prefix + "samples/all_classes.png"},
                   "class_samples": [{"class": name, "key": f"{prefix}samples/{i:03d}.png"}
                                     for i, name in enumerate(dataset.vocabulary[kind])], **extra},
        summary={"counts": counts_of(dataset), "roles": dataset.roles or {"type": kind},
                 "joint_counts": joint_counts(dataset)},
        output={"evaluation": evaluation})
    return publish_version(ctx, job, inp, params, result, version)


LATENT_MAP_IMAGES = 2000


def latent_map(encode: Callable[..., torch.Tensor], model: Any, dataset: ImageDataset, ref: str,
               device: torch.device, seed: int) -> bytes:
    """t-SNE of the held-out images' posterior means (up to LATENT_MAP_IMAGES), coloured by type."""
    test = dataset.test
    if len(test) > LATENT_MAP_IMAGES:
        test = test.take(np.sort(np.random.default_rng(seed).permutation(len(test))[:LATENT_MAP_IMAGES]))
    with torch.no_grad():
        latents = torch.cat([encode(model, x, cond).float().cpu() for x, cond in batches(test, 256, device)])
    kind = type_condition(dataset)
    return latent_map_png(latents.numpy(), test.conditions[kind], dataset.vocabulary[kind],
                          f"{ref}: held-out latent means (t-SNE), by {kind}", seed)


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
        return family.sample(model, SampleRequest(cond, seeds, mode=mode), ctx.device)

    try:
        judge_model = ctx.load_model(judge.ref)
    except ModelUnloadable as exc:  # the trained model is still worth publishing, unjudged
        return {"skipped": f"the judge could not be loaded: {exc}"}
    images = family.eval_images(inp.preset.value, EVAL_IMAGES[inp.preset.value])
    result = evaluate_generator(sample, judge_model, dataset.train, dataset.test, dataset.vocabulary,
                                type_condition(dataset), max_images=images, seed=seed,
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
    if "diversity" in evaluation:
        adherence["diversity"] = evaluation["diversity"]
    if not evaluation.get("fid_verdict", True):
        return {"fid_withheld": evaluation["fid_withheld"], **adherence}
    return {"fid": evaluation["fid"], "kid": evaluation["kid"], "fid_floor": evaluation["floor"]["fid"], **adherence}

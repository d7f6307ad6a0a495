"""The `train` job for family `classifier`: the domain classifier on an image dataset, published as
a model version with held-out accuracy per head (overall and per class) in its metrics.

Each epoch draws examples weighted count(type)^-power (the preset's recipe; `cpu` draws the
catalog's own mix, which measured two points more accurate on it). Rare types are judged through the
balanced reading instead (the class priors it keeps), so the augmentation gate does not need the
training to oversample them. Its probabilities are temperature-calibrated on held-out images, so a
confidence of 0.8 is right about 80 % of the time."""

from __future__ import annotations

from dataclasses import asdict

from shared.registry import feature_index_key
from shared.schemas import Job, TrainInput
from worker.context import WorkerContext
from worker.datasets.base import ImageDataset
from worker.datasets.store import counts_of
from worker.handlers.common import Progress, ShouldStop, StorageCheckpoint, claim_model_version, scaled, train_params
from worker.handlers.publishing import Version, publish_version
from worker.models import classifier
from worker.training.classifier_trainer import (
    Recipe,
    calibrate,
    held_out_logits,
    per_class_recall,
    train_classifier,
)
from worker.training.precision import autocast_dtype


def train_domain_classifier(ctx: WorkerContext, job: Job, progress: Progress, should_stop: ShouldStop,
                            dataset: ImageDataset, type_condition: str) -> dict:
    inp = TrainInput(**job.input)
    ref = claim_model_version(ctx, job, "classifier")
    fp32 = autocast_dtype(ctx.device, ctx.settings.mixed_precision) is None
    preset = classifier.preset_for(inp.preset.value, fp32=fp32)
    config = classifier.config_for(dataset, inp.preset.value, fp32=fp32)
    params = train_params(inp, preset["train"], ctx.settings.mixed_precision)
    recipe = Recipe(**preset.get("recipe", {}))
    result = train_classifier(config, params, dataset.train, dataset.test, device=ctx.device,
                              progress=scaled(progress, 0.05, 0.9), should_stop=should_stop,
                              checkpoint=StorageCheckpoint(ctx.storage, f"jobs/{job.id}/checkpoint.pt"),
                              stratify_by=type_condition, oversample_by=type_condition, recipe=recipe)
    progress(0.9, "calibrating on held-out images")
    test = dataset.test.head(params.max_eval_examples)
    logits = held_out_logits(result.model, test, ctx.device)  # one pass serves calibration and recall
    model, calibration = calibrate(result.model, test, ctx.device, logits)
    progress(0.92, "writing the model version")
    per_class = {head: per_class_recall(logits[head], test.conditions[head], names)
                 for head, names in dataset.vocabulary.items()}
    balanced = {f"balanced_accuracy_{head}": round(float(sum(v.values()) / max(len(v), 1)), 4)
                for head, v in per_class.items()}
    final = {k: v for k, v in result.final.items() if k.startswith(("accuracy", "top3")) or k == "test_loss"}
    ece = {f"ece_{head}": c["ece_after"] for head, c in calibration.items()}

    def build_index() -> dict:
        # The nearest-item index under this version, built now (training queue) so that interactive
        # generate and similar jobs only ever load it.
        ctx.feature_index(inp.dataset, ref, progress=scaled(progress, 0.94, 0.99))
        return {"feature_index": {"key": feature_index_key(inp.dataset, ref)}}

    version = Version(
        ref=ref, checkpoint=classifier.to_checkpoint(model),
        config={"model": asdict(model.config), "train": asdict(params), "recipe": asdict(recipe)},
        metrics={"per_class_accuracy": per_class, "calibration": calibration},
        headline={**final, **balanced, **ece}, vocabulary=dataset.vocabulary,
        curves={"train": "train_loss", "held-out": "test_loss"}, curve_unit="cross-entropy, summed over heads",
        summary={"counts": counts_of(dataset), "roles": dataset.roles or {"type": type_condition}},
        output={"per_class_accuracy": per_class, "calibration": calibration})
    return publish_version(ctx, job, inp, params, result, version, after_register=build_index)

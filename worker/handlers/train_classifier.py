"""The `train` job for family `classifier`: the domain classifier on an image dataset, published as
a model version with held-out accuracy per head (overall and per class) in its metrics.

Each epoch draws examples weighted count(type)^-power (the preset's recipe; `cpu` draws the
catalog's own mix, which measured two points more accurate on it). Rare types are judged through the
balanced reading instead (the class priors it keeps), so the augmentation gate does not need the
training to oversample them. Its probabilities are temperature-calibrated on held-out images, so a
confidence of 0.8 is right about 80 % of the time."""

from __future__ import annotations

import io
from dataclasses import asdict
from datetime import UTC, datetime

import torch

from shared.registry import feature_index_key, model_prefix, parse_ref
from shared.schemas import Job, TrainInput
from shared.storage import PutItem
from worker.context import WorkerContext
from worker.datasets.base import ImageDataset
from worker.datasets.store import counts_of
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
from worker.models import classifier
from worker.plots import loss_curve_png
from worker.training.classifier_trainer import (
    Recipe,
    calibrate,
    held_out_logits,
    per_class_recall,
    train_classifier,
)


def train_domain_classifier(ctx: WorkerContext, job: Job, progress: Progress, should_stop: ShouldStop,
                            dataset: ImageDataset, type_condition: str) -> dict:
    inp = TrainInput(**job.input)
    ref = claim_model_version(ctx, job, "classifier")
    family, version = parse_ref(ref)
    preset = classifier.PRESETS[inp.preset.value]
    config = classifier.config_for(dataset, inp.preset.value)
    defaults = preset["train"]
    params = train_params(inp, defaults)
    recipe = Recipe(**preset.get("recipe", {}))
    result = train_classifier(config, params, dataset.train, dataset.test, device=ctx.device,
                              progress=scaled(progress, 0.05, 0.9), should_stop=should_stop,
                              checkpoint=StorageCheckpoint(ctx.storage, f"jobs/{job.id}/checkpoint.pt"),
                              stratify_by=type_condition, oversample_by=type_condition, recipe=recipe)
    progress(0.9, "calibrating on held-out images")
    test = dataset.test.head(params.max_eval_examples)
    logits = held_out_logits(result.model, test, ctx.device)  # one pass serves calibration and recall
    model, calibration = calibrate(result.model, test, ctx.device, logits)
    config = model.config
    progress(0.92, "writing the model version")
    per_class = {head: per_class_recall(logits[head], test.conditions[head], names)
                 for head, names in dataset.vocabulary.items()}
    balanced = {f"balanced_accuracy_{head}": round(float(sum(v.values()) / max(len(v), 1)), 4)
                for head, v in per_class.items()}
    prefix = model_prefix(family, version)
    weights = io.BytesIO()
    torch.save(classifier.to_checkpoint(model), weights)
    curve = loss_curve_png(result.history, f"{ref} on {inp.dataset}", {"train": "train_loss", "held-out": "test_loss"},
                           "cross-entropy, summed over heads")
    ctx.storage.put_many([PutItem(prefix + "model.pt", weights.getvalue()),
                          PutItem(prefix + "loss_curve.png", curve, "image/png")])
    ctx.storage.put_json(prefix + "config.json", {"model": asdict(config), "train": asdict(params),
                                                  "recipe": asdict(recipe), "preset": inp.preset.value})
    ctx.storage.put_json(prefix + "metrics.json", {"final": result.final, "history": result.history,
                                                   "per_class_accuracy": per_class, "calibration": calibration,
                                                   "resumed_from_epoch": result.resumed_from_epoch,
                                                   "stopped_early": result.stopped_early,
                                                   "device": str(ctx.device)})
    final = {k: v for k, v in result.final.items() if k.startswith(("accuracy", "top3")) or k == "test_loss"}
    ece = {f"ece_{head}": c["ece_after"] for head, c in calibration.items()}
    summary = {"family": family, "version": version, "ref": ref, "dataset": inp.dataset,
               "created_at": datetime.now(UTC).isoformat(), "job_id": job.id,
               "metrics": {**final, **balanced, **ece, "epochs": len(result.history),
                           "train_seconds": round(sum(r.get("seconds", 0.0) for r in result.history), 1)},
               "vocabulary": dataset.vocabulary,
               "counts": counts_of(dataset), "roles": dataset.roles or {"type": type_condition}}
    ctx.storage.put_json(prefix + "model.json", summary)  # written last: the version is complete
    promotion = publish(ctx, summary, inp.promote)
    # The nearest-item index under this version, built now (training queue) so that interactive
    # generate jobs only ever load it.
    ctx.feature_index(inp.dataset, ref, progress=scaled(progress, 0.94, 0.99))
    output = {"model": ref, "active": promotion["active"], "promotion": promotion,
              "metrics": summary["metrics"], "per_class_accuracy": per_class, "calibration": calibration,
              **({"stopped_early": result.stopped_early} if result.stopped_early else {}),
              "artifacts": {"weights": {"key": prefix + "model.pt"}, "loss_curve": {"key": prefix + "loss_curve.png"},
                            "metrics": {"key": prefix + "metrics.json"}, "config": {"key": prefix + "config.json"},
                            "feature_index": {"key": feature_index_key(inp.dataset, ref)}}}
    write_manifest(ctx.storage, job, output, seeds={"train": params.seed}, model=ref)
    ctx.storage.delete(f"jobs/{job.id}/checkpoint.pt")
    return output

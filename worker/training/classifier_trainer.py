"""The domain classifier's training loop: summed cross-entropy over the heads with label smoothing,
light augmentation (horizontal flips, shifts of a few pixels: never a colour jitter, which would
change the colour label), a warm-up then one cosine decay, held-out accuracy per head each epoch, and
per-epoch checkpoints so a redelivered job resumes. A plain function with progress, cooperative
cancel and an optional time budget.

After training, a softmax temperature per head is fitted on one half of the held-out images and the
calibration (expected calibration error) is reported on the other half, before and after."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.nn import functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

from shared.errors import JobCanceled
from worker.datasets.base import ImageSplit
from worker.models.classifier import Classifier, ClassifierConfig
from worker.training.common import (
    CheckpointIO,
    Progress,
    ShouldStop,
    TimeBudget,
    TrainParams,
    TrainResult,
    batches,
    epoch_order,
    resume,
    save_epoch,
    to_batch,
)
from worker.training.precision import autocast, autocast_dtype

log = logging.getLogger(__name__)
SHIFT = 1 / 16  # of the image side, at the resolution the network sees (2 px at 32 px)
ECE_BINS = 15


@dataclass(frozen=True)
class Recipe:
    """How the classifier is trained, beyond the common parameters (chosen by measurement:
    docs/BENCHMARKS.md, "Domain classifier")."""

    label_smoothing: float = 0.1
    warmup_fraction: float = 0.06  # of all steps, linear from 0
    weight_decay: float = 5e-4
    # Epoch draws with each example weighted count(class)^-power: 0 is the catalog's own mix, 1 every
    # product type equally often, 0.5 rare types far more often than their share without starving
    # the common ones (the held-out accuracy is measured on the catalog's own mix).
    balance_power: float = 0.5


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to SHIFT of the side (edge-padded), per image."""
    b, _, h, w = x.shape
    shift = max(1, round(SHIFT * w))
    flip = torch.rand(b, generator=generator, device=x.device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    dy, dx = (torch.randint(0, 2 * shift + 1, (2, b), generator=generator, device=x.device)).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


def inverse_frequency(split: ImageSplit, condition: str, classes: int, device: torch.device) -> torch.Tensor:
    """Cross-entropy class weights n / (classes * count), so a balanced set has every weight 1."""
    counts = np.bincount(split.conditions[condition], minlength=classes).astype(np.float64)
    weights = len(split) / (classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32, device=device)


@torch.no_grad()
def held_out_logits(model: Classifier, split: ImageSplit, device: torch.device,
                    batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Raw logits of every held-out image per head, {head: [N, classes]} on the CPU."""
    model.eval()
    out: dict[str, list[torch.Tensor]] = {name: [] for name in model.heads}
    for x, _ in batches(split, batch_size, device):
        for name, logits in model.infer(x)[0].items():
            out[name].append(logits.float().cpu())
    return {name: torch.cat(v) if v else torch.zeros(0, model.heads[name].out_features) for name, v in out.items()}


def per_class_accuracy(model: Classifier, split: ImageSplit, head: str, names: list[str],
                       device: torch.device) -> dict[str, float]:
    """Held-out accuracy (recall) of one head for each of its classes (rare classes are where it matters)."""
    return per_class_recall(held_out_logits(model, split, device)[head], split.conditions[head], names)


def per_class_recall(logits: torch.Tensor, truth: np.ndarray, names: list[str]) -> dict[str, float]:
    """Recall per class from logits already computed (argmax: the same with or without a temperature)."""
    predicted = logits.argmax(dim=-1).numpy()
    return {name: float((predicted[truth == i] == i).mean()) for i, name in enumerate(names) if (truth == i).any()}


@torch.no_grad()
def evaluate(model: Classifier, split: ImageSplit, batch_size: int, device: torch.device) -> dict[str, float]:
    """Held-out loss, top-1 ("accuracy_<head>") and top-3 ("top3_<head>") accuracy per head, and the
    mean top-1 over heads ("accuracy")."""
    logits = held_out_logits(model, split, device, batch_size)
    n = max(len(split), 1)
    row: dict[str, float] = {}
    loss = 0.0
    for name, out in logits.items():
        truth = torch.from_numpy(split.conditions[name])
        loss += float(F.cross_entropy(out, truth, reduction="sum")) if len(truth) else 0.0
        row[f"accuracy_{name}"] = float((out.argmax(dim=-1) == truth).sum()) / n
        k = min(3, out.shape[1])
        row[f"top3_{name}"] = float((out.topk(k, dim=-1).indices == truth[:, None]).any(dim=-1).sum()) / n
    row["accuracy"] = float(np.mean([row[f"accuracy_{name}"] for name in logits]))
    row["test_loss"] = loss / n
    return row


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The softmax temperature that minimises the negative log-likelihood of held-out labels
    (Guo et al. 2017), by L-BFGS on log T."""
    if len(labels) == 0:
        return 1.0
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    if len(labels) == 0:
        return 0.0
    return float(multiclass_calibration_error((logits / temperature).softmax(dim=-1), labels,
                                              num_classes=logits.shape[1], n_bins=ECE_BINS, norm="l1"))


def calibrate(model: Classifier, split: ImageSplit, device: torch.device,
              logits: dict[str, torch.Tensor] | None = None) -> tuple[Classifier, dict[str, dict]]:
    """Fit each head's temperature on the even-numbered held-out images and measure the expected
    calibration error on the odd-numbered ones, before and after; returns the model with its
    temperatures in the config and the report per head. `logits`: the split's, when already computed."""
    logits = logits if logits is not None else held_out_logits(model, split, device)
    fit, check = slice(0, None, 2), slice(1, None, 2)
    temperatures, report = {}, {}
    for name, out in logits.items():
        labels = torch.from_numpy(split.conditions[name])
        t = fit_temperature(out[fit], labels[fit])
        temperatures[name] = round(t, 4)
        report[name] = {"temperature": round(t, 4), "images_fitted": int(len(labels[fit])),
                        "images_checked": int(len(labels[check])),
                        "ece_before": round(expected_calibration_error(out[check], labels[check]), 4),
                        "ece_after": round(expected_calibration_error(out[check], labels[check], t), 4)}
    model.config = replace(model.config, temperatures=temperatures)
    return model, report


class Schedule:
    """Warm-up then one cosine decay over the run. With a time budget, the run's progress is the
    larger of steps done and time used, so a slower machine still ends on a decayed learning rate."""

    def __init__(self, peak: float, total_steps: int, warmup_fraction: float, budget: TimeBudget) -> None:
        self.peak, self.total = peak, max(total_steps, 1)
        self.warmup = max(1, int(warmup_fraction * self.total))
        self.budget = budget

    def progress(self, step: int) -> float:
        return max(step / self.total, self.budget.fraction())

    def rate(self, step: int) -> float:
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        p = min(1.0, (self.progress(step) * self.total - self.warmup) / max(self.total - self.warmup, 1))
        return self.peak * 0.5 * (1 + math.cos(math.pi * max(p, 0.0)))


def train_classifier(config: ClassifierConfig, params: TrainParams, train: ImageSplit, test: ImageSplit, *,
                     device: torch.device, progress: Progress, should_stop: ShouldStop,
                     checkpoint: CheckpointIO | None = None, stratify_by: str | None = None,
                     class_weights: dict[str, torch.Tensor] | None = None,
                     oversample_by: str | None = None, recipe: Recipe | None = None) -> TrainResult:
    """`class_weights` weight each head's cross-entropy per class; `oversample_by` draws each epoch's
    examples weighted by that condition's class counts (recipe.balance_power; both are the usual
    answers to rare classes, measured against synthetic data by bench/augment_eval.py). Training
    stops at the end of the step that crosses `params.max_minutes`; the result says so."""
    recipe = recipe or Recipe()
    torch.manual_seed(params.seed)
    # channels-last convolutions are about a fifth faster on the CPU (measured); weights are unchanged
    model = Classifier(config).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.learning_rate, weight_decay=recipe.weight_decay)
    train = train.stratified_head(params.max_train_examples, stratify_by or next(iter(config.conditions)),
                                  params.seed)
    test = test.head(params.max_eval_examples)
    result = TrainResult(model=model)
    parts = {"model": model, "optimizer": optimizer}
    resume(checkpoint, result, parts)
    steps_per_epoch = max(1, math.ceil(len(train) / params.batch_size))
    total_steps = params.epochs * steps_per_epoch
    budget = TimeBudget(params.max_minutes, result.history)
    schedule = Schedule(params.learning_rate, total_steps, recipe.warmup_fraction, budget)
    weights = class_weights or {}
    dtype = autocast_dtype(device, params.mixed_precision)
    for epoch in range(result.resumed_from_epoch, params.epochs):
        if budget.out_of_time():  # crossed while the last epoch was evaluated, or before a resume
            result.stopped_early = result.stopped_early or budget.reason(epoch)
            break
        model.train()
        order = epoch_order(train, np.random.default_rng([params.seed, epoch]), oversample_by,
                            recipe.balance_power)
        gen = torch.Generator(device=device).manual_seed(params.seed * 1000 + epoch)
        loss_sum, steps, epoch_started = 0.0, 0, time.monotonic()
        for step in range(steps_per_epoch):
            if should_stop():
                raise JobCanceled()
            done = epoch * steps_per_epoch + step
            for group in optimizer.param_groups:
                group["lr"] = schedule.rate(done)
            x, cond = to_batch(train, order[step * params.batch_size:(step + 1) * params.batch_size], device)
            x = augment(model.resize(x), gen).contiguous(memory_format=torch.channels_last)
            with autocast(device, dtype):
                logits = model(x, resized=True)
            loss = sum(F.cross_entropy(out.float(), cond[name], weight=weights.get(name),
                                       label_smoothing=recipe.label_smoothing) for name, out in logits.items())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
            steps += 1
            progress(max(done + 1, schedule.progress(done + 1) * total_steps) / total_steps,
                     f"epoch {epoch + 1}/{params.epochs}, batch {step + 1}/{steps_per_epoch}, loss {loss.item():.3f}")
            if budget.out_of_time():
                result.stopped_early = budget.reason(epoch + 1, step + 1, steps_per_epoch)
                break
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(steps, 1),
               "seconds": round(time.monotonic() - epoch_started, 1),
               **evaluate(model, test, params.batch_size, device)}
        result.history.append(row)
        progress(min(1.0, schedule.progress(done + 1)), f"epoch {epoch + 1}/{params.epochs} done, held-out accuracy "
                                                        f"{row['accuracy']:.3f}")
        save_epoch(checkpoint, result, parts)
    model.to(memory_format=torch.contiguous_format).eval()  # as a loaded checkpoint is: the same numbers
    model.config = replace(model.config, log_priors=log_priors(train, config.conditions))
    return result


def log_priors(split: ImageSplit, conditions: dict[str, int]) -> dict[str, list[float]]:
    """Per head, the log share of each class among the training images (unseen classes: one image)."""
    out = {}
    for name, classes in conditions.items():
        counts = np.maximum(np.bincount(split.conditions[name], minlength=classes), 1).astype(np.float64)
        out[name] = [round(float(v), 5) for v in np.log(counts / counts.sum())]
    return out

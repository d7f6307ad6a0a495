"""The domain classifier's training loop: summed cross-entropy over the heads, light augmentation
(horizontal flips, shifts of a few pixels), held-out accuracy per head each epoch, and per-epoch
checkpoints so a redelivered job resumes. A plain function with progress and cooperative cancel."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch.nn import functional as F

from shared.errors import JobCanceled
from worker.datasets.base import ImageSplit
from worker.models.classifier import Classifier, ClassifierConfig
from worker.training.common import (
    CheckpointIO,
    Progress,
    ShouldStop,
    TrainParams,
    TrainResult,
    batches,
    resume,
    save_epoch,
    to_batch,
)

log = logging.getLogger(__name__)
SHIFT = 2  # pixels


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to SHIFT pixels (edge-padded), per image."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=generator, device=x.device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    padded = F.pad(x, (SHIFT, SHIFT, SHIFT, SHIFT), mode="replicate")
    dy, dx = (torch.randint(0, 2 * SHIFT + 1, (2, b), generator=generator, device=x.device)).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


def epoch_order(split: ImageSplit, rng: np.random.Generator, balance_by: str | None = None) -> np.ndarray:
    """One epoch's example order: a permutation, or with `balance_by` len(split) draws with replacement,
    each class of that condition equally likely."""
    if balance_by is None:
        return rng.permutation(len(split))
    labels = split.conditions[balance_by]
    counts = np.bincount(labels)
    p = 1.0 / counts[labels]
    return rng.choice(len(split), size=len(split), replace=True, p=p / p.sum())


def inverse_frequency(split: ImageSplit, condition: str, classes: int, device: torch.device) -> torch.Tensor:
    """Cross-entropy class weights n / (classes * count), so a balanced set has every weight 1."""
    counts = np.bincount(split.conditions[condition], minlength=classes).astype(np.float64)
    weights = len(split) / (classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32, device=device)


@torch.no_grad()
def per_class_accuracy(model: Classifier, split: ImageSplit, head: str, names: list[str],
                       device: torch.device) -> dict[str, float]:
    """Held-out accuracy of one head for each of its classes (rare classes are where it matters)."""
    model.eval()
    predicted = np.concatenate([model(x)[head].argmax(dim=-1).cpu().numpy() for x, _ in batches(split, 256, device)])
    truth = split.conditions[head]
    return {name: float((predicted[truth == i] == i).mean()) for i, name in enumerate(names) if (truth == i).any()}


@torch.no_grad()
def evaluate(model: Classifier, split: ImageSplit, batch_size: int, device: torch.device) -> dict[str, float]:
    """Held-out loss and accuracy per head ("accuracy_<head>"), and their mean ("accuracy")."""
    model.eval()
    correct = {name: 0 for name in model.heads}
    loss = 0.0
    for x, cond in batches(split, batch_size, device):
        logits = model(x)
        for name, out in logits.items():
            loss += F.cross_entropy(out, cond[name], reduction="sum").item()
            correct[name] += int((out.argmax(dim=-1) == cond[name]).sum())
    n = max(len(split), 1)
    row = {f"accuracy_{name}": c / n for name, c in correct.items()}
    row["accuracy"] = sum(row.values()) / len(row)
    row["test_loss"] = loss / n
    return row


def train_classifier(config: ClassifierConfig, params: TrainParams, train: ImageSplit, test: ImageSplit, *,
                     device: torch.device, progress: Progress, should_stop: ShouldStop,
                     checkpoint: CheckpointIO | None = None, stratify_by: str | None = None,
                     class_weights: dict[str, torch.Tensor] | None = None,
                     oversample_by: str | None = None) -> TrainResult:
    """`class_weights` weight each head's cross-entropy per class; `oversample_by` draws each epoch's
    examples with replacement so every value of that condition is equally likely (both are the
    usual answers to rare classes, measured against synthetic data by bench/augment_eval.py)."""
    torch.manual_seed(params.seed)
    model = Classifier(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.learning_rate, weight_decay=1e-4)
    train = train.stratified_head(params.max_train_examples, stratify_by or next(iter(config.conditions)),
                                  params.seed)
    test = test.head(params.max_eval_examples)
    result = TrainResult(model=model)
    parts = {"model": model, "optimizer": optimizer}
    resume(checkpoint, result, parts)
    steps_per_epoch = max(1, math.ceil(len(train) / params.batch_size))
    total_steps = params.epochs * steps_per_epoch
    for epoch in range(result.resumed_from_epoch, params.epochs):
        model.train()
        order = epoch_order(train, np.random.default_rng([params.seed, epoch]), oversample_by)
        gen = torch.Generator(device=device).manual_seed(params.seed * 1000 + epoch)
        loss_sum = 0.0
        for step in range(steps_per_epoch):
            if should_stop():
                raise JobCanceled()
            done = epoch * steps_per_epoch + step
            for group in optimizer.param_groups:  # one cosine decay over the run, a function of the step
                group["lr"] = params.learning_rate * 0.5 * (1 + math.cos(math.pi * done / total_steps))
            x, cond = to_batch(train, order[step * params.batch_size:(step + 1) * params.batch_size], device)
            logits = model(augment(x, gen))
            weights = class_weights or {}
            loss = sum(F.cross_entropy(out, cond[name], weight=weights.get(name)) for name, out in logits.items())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
            progress((epoch * steps_per_epoch + step + 1) / total_steps,
                     f"epoch {epoch + 1}/{params.epochs}, batch {step + 1}/{steps_per_epoch}, loss {loss.item():.3f}")
        row = {"epoch": epoch + 1, "train_loss": loss_sum / steps_per_epoch,
               **evaluate(model, test, params.batch_size, device)}
        result.history.append(row)
        progress((epoch + 1) / params.epochs, f"epoch {epoch + 1}/{params.epochs} done, held-out accuracy "
                                              f"{row['accuracy']:.3f}")
        save_epoch(checkpoint, result, parts)
    model.eval()
    return result

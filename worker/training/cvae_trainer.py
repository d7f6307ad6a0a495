"""The CVAE training loop: a plain function with progress and cooperative cancel, resumable from a
per-epoch checkpoint so a redelivered job picks up where the killed one stopped."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch

from shared.errors import JobCanceled
from worker.datasets.base import ImageSplit
from worker.models.cvae import CVAE, CVAEConfig, fit_latent_statistics, loss_terms
from worker.training.common import (
    CheckpointIO,
    Progress,
    ShouldStop,
    TimeBudget,
    TrainParams,
    TrainResult,
    batches,
    resume,
    save_epoch,
    to_batch,
)
from worker.training.precision import as_float, autocast, autocast_dtype

log = logging.getLogger(__name__)

@torch.no_grad()
def evaluate(model: CVAE, split: ImageSplit, batch_size: int, device: torch.device, seed: int) -> dict[str, float]:
    """Held-out loss (negative ELBO per image, nats) split into reconstruction and KL."""
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    totals = {"recon": 0.0, "kl": 0.0}
    for start in range(0, len(split), batch_size):
        idx = np.arange(start, min(start + batch_size, len(split)))
        x, cond = to_batch(split, idx, device)
        logits, mu, logvar = model(x, cond, generator=gen)
        recon, kl = loss_terms(model, logits, x, mu, logvar)
        totals["recon"] += recon.item() * len(idx)
        totals["kl"] += kl.item() * len(idx)
    n = max(len(split), 1)
    return {"recon": totals["recon"] / n, "kl": totals["kl"] / n, "loss": (totals["recon"] + totals["kl"]) / n}


def train_cvae(config: CVAEConfig, params: TrainParams, train: ImageSplit, test: ImageSplit, *,
               device: torch.device, progress: Progress, should_stop: ShouldStop,
               checkpoint: CheckpointIO | None = None, stratify_by: str | None = None) -> TrainResult:
    torch.manual_seed(params.seed)
    model = CVAE(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
    train = train.stratified_head(params.max_train_examples, stratify_by or config.mean_over, params.seed)
    test = test.head(params.max_eval_examples)
    result = TrainResult(model=model)

    parts = {"model": model, "optimizer": optimizer}
    resume(checkpoint, result, parts)
    if result.resumed_from_epoch:
        log.info("resuming training after epoch %d", result.resumed_from_epoch)

    budget = TimeBudget(params.max_minutes, result.history)
    steps_per_epoch = math.ceil(len(train) / params.batch_size)
    total_steps = params.epochs * steps_per_epoch
    dtype = autocast_dtype(device, params.mixed_precision)
    for epoch in range(result.resumed_from_epoch, params.epochs):
        if budget.out_of_time():
            result.stopped_early = result.stopped_early or budget.reason(epoch)
            break
        epoch_started, seen = time.monotonic(), 0
        model.train()
        # Shuffle order depends only on (seed, epoch), so a resumed run sees the same batches.
        order = np.random.default_rng([params.seed, epoch]).permutation(len(train))
        gen = torch.Generator(device=device).manual_seed(params.seed * 1000 + epoch)
        sums = {"recon": 0.0, "kl": 0.0}
        for step in range(steps_per_epoch):
            if should_stop():
                raise JobCanceled()
            idx = order[step * params.batch_size:(step + 1) * params.batch_size]
            x, cond = to_batch(train, idx, device)
            with autocast(device, dtype):
                outputs = model(x, cond, generator=gen)
            logits, mu, logvar = (as_float(t) for t in outputs)
            recon, kl = loss_terms(model, logits, x, mu, logvar)
            loss = recon + kl
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums["recon"] += recon.item() * len(idx)
            sums["kl"] += kl.item() * len(idx)
            seen += len(idx)
            done = epoch * steps_per_epoch + step + 1
            progress(max(done / total_steps, budget.fraction()),
                     f"epoch {epoch + 1}/{params.epochs}, batch {step + 1}/{steps_per_epoch}, loss {loss.item():.1f}")
            if budget.out_of_time():
                result.stopped_early = budget.reason(epoch + 1, step + 1, steps_per_epoch)
                break
        held_out = evaluate(model, test, params.batch_size, device, params.seed)
        n = max(seen, 1)
        row = {"epoch": epoch + 1, "train_loss": (sums["recon"] + sums["kl"]) / n,
               "train_recon": sums["recon"] / n, "train_kl": sums["kl"] / n,
               "seconds": round(time.monotonic() - epoch_started, 1),
               "test_loss": held_out["loss"], "test_recon": held_out["recon"], "test_kl": held_out["kl"]}
        result.history.append(row)
        progress(min(1.0, max((epoch + 1) / params.epochs, budget.fraction())),
                 f"epoch {epoch + 1}/{params.epochs} done, test loss {held_out['loss']:.2f}")
        save_epoch(checkpoint, result, parts)
        if result.stopped_early:
            break
    fit_latent_statistics(model, batches(train, params.batch_size, device))
    model.eval()
    return result

"""The diffusion training loop (EDM, Karras et al. 2022): each image is noised to a level drawn from a
log-normal, the preconditioned denoiser is fitted to the clean image with EDM's loss weight, and the
conditions are dropped for a share of images so one network is both the conditional and the
unconditional model that classifier-free guidance combines. Class-balanced draws (as for the GAN)
so rare product types are trained more often than their share; horizontal flips, which change no
label; an EMA of the weights for sampling; bf16 autocast where the device computes it natively (precision.py).

A plain function with progress and cooperative cancel; the full training state is checkpointed
each epoch so a redelivered job resumes.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from shared.errors import JobCanceled
from worker.datasets.base import ImageSplit
from worker.models.diffusion import Diffusion, DiffusionConfig, denoise, loss_weight
from worker.models.ema import warmed_decay
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

# Fixed noise levels for the held-out loss, so versions compare on the same footing: quantiles of
# the training distribution from nearly clean to nearly pure noise.
EVAL_SIGMAS = (0.02, 0.08, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0)


@dataclass(frozen=True)
class DiffusionRecipe:
    balance_power: float = 0.5  # draws weighted count(type)^-power; 0: the dataset's own mix
    p_mean: float = -1.2  # ln σ ~ N(p_mean, p_std²): EDM's training noise levels
    p_std: float = 1.2
    ema_decay: float = 0.998  # a window of ~500 steps: CPU runs are a few thousand steps long
    warmup_steps: int = 200  # linear learning-rate warm-up
    flip: bool = True  # random horizontal flips
    grad_clip: float = 1.0


def diffusion_loss(net: torch.nn.Module, x: torch.Tensor, e: torch.Tensor, gen: torch.Generator,
                   recipe: DiffusionRecipe) -> torch.Tensor:
    """EDM's weighted denoising loss for a batch x in [-1, 1] with condition embeddings e."""
    b = x.shape[0]
    sigma = (torch.randn(b, generator=gen) * recipe.p_std + recipe.p_mean).exp().to(x.device)
    noise = torch.randn(x.shape, generator=gen).to(x.device)
    s = sigma.reshape(-1, 1, 1, 1)
    denoised = denoise(net, x + noise * s, sigma, e)
    return (loss_weight(s) * (denoised.float() - x) ** 2).mean()


def drop_conditions(cond: dict[str, torch.Tensor], p: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The same images with all their conditions replaced by "no condition" (-1) at rate p."""
    first = next(iter(cond.values()))
    drop = (torch.rand(first.shape[0], generator=gen) < p).to(first.device)
    return {k: torch.where(drop, torch.full_like(v, -1), v) for k, v in cond.items()}


@torch.no_grad()
def evaluate(model: Diffusion, split: ImageSplit, batch_size: int, device: torch.device, seed: int) -> float:
    """The EMA denoiser's weighted loss on held-out images, averaged over EVAL_SIGMAS with fixed noise."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total, n = 0.0, 0
    for x, cond in batches(split, batch_size, device):
        x = x * 2 - 1
        e = model.ema.embed(cond)
        for level in EVAL_SIGMAS:
            sigma = torch.full((x.shape[0],), level, device=device)
            noise = torch.randn(x.shape, generator=gen).to(device)
            denoised = denoise(model.ema, x + noise * level, sigma, e)
            total += float((loss_weight(sigma[0]) * (denoised - x) ** 2).mean(dim=(1, 2, 3)).sum())
        n += x.shape[0] * len(EVAL_SIGMAS)
    return total / max(n, 1)


def train_diffusion(config: DiffusionConfig, params: TrainParams, train: ImageSplit, test: ImageSplit, *,
                    device: torch.device, progress: Progress, should_stop: ShouldStop,
                    checkpoint: CheckpointIO | None = None, stratify_by: str | None = None,
                    recipe: DiffusionRecipe | None = None) -> TrainResult:
    """Stops at the end of the step that crosses `params.max_minutes`, then evaluates what it has."""
    recipe = recipe or DiffusionRecipe()
    torch.manual_seed(params.seed)
    model = Diffusion(config).to(device)
    optimizer = torch.optim.Adam(model.net.parameters(), lr=params.learning_rate)
    kind = stratify_by or sorted(config.conditions)[0]
    train = train.stratified_head(params.max_train_examples, kind, params.seed)
    test = test.head(params.max_eval_examples)
    result = TrainResult(model=model)
    parts = {"model": model, "optimizer": optimizer}
    resume(checkpoint, result, parts)
    if result.resumed_from_epoch:
        log.info("resuming diffusion training after epoch %d", result.resumed_from_epoch)

    budget = TimeBudget(params.max_minutes, result.history)
    steps_per_epoch = max(1, math.ceil(len(train) / params.batch_size))
    total_steps = params.epochs * steps_per_epoch
    dtype = autocast_dtype(device, params.mixed_precision)
    for epoch in range(result.resumed_from_epoch, params.epochs):
        if budget.out_of_time():
            result.stopped_early = result.stopped_early or budget.reason(epoch)
            break
        model.train()
        rng = np.random.default_rng([params.seed, epoch])  # same batches after a resume
        order = epoch_order(train, rng, kind, recipe.balance_power)
        gen = torch.Generator().manual_seed(params.seed * 1000 + epoch)
        loss_sum, seen, epoch_started = 0.0, 0, time.monotonic()
        for step in range(steps_per_epoch):
            if should_stop():
                raise JobCanceled()
            idx = order[step * params.batch_size:(step + 1) * params.batch_size]
            x, cond = to_batch(train, idx, device)
            x = x * 2 - 1
            if recipe.flip:
                flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(device)
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
            step_no = epoch * steps_per_epoch + step
            for group in optimizer.param_groups:
                group["lr"] = params.learning_rate * min(1.0, (step_no + 1) / max(recipe.warmup_steps, 1))
            with autocast(device, dtype):
                e = model.net.embed(drop_conditions(cond, config.p_uncond, gen))
                loss = diffusion_loss(model.net, x, e, gen, recipe)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"diffusion loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.net.parameters(), recipe.grad_clip)
            optimizer.step()
            model.update_ema(warmed_decay(step_no, recipe.ema_decay))
            loss_sum += loss.item() * x.shape[0]
            seen += x.shape[0]
            progress(max((step_no + 1) / total_steps, budget.fraction()),
                     f"epoch {epoch + 1}/{params.epochs}, batch {step + 1}/{steps_per_epoch}, loss {loss.item():.3f}")
            if budget.out_of_time():
                result.stopped_early = budget.reason(epoch + 1, step + 1, steps_per_epoch)
                break
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
               "seconds": round(time.monotonic() - epoch_started, 1),
               "test_loss": evaluate(model, test, max(params.batch_size, 64), device, params.seed)}
        result.history.append(row)
        progress(min(1.0, max((epoch + 1) / params.epochs, budget.fraction())),
                 f"epoch {epoch + 1}/{params.epochs} done, held-out loss {row['test_loss']:.3f}")
        save_epoch(checkpoint, result, parts)
        if result.stopped_early:
            break
    model.eval()
    return result

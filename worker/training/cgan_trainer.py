"""The conditional GAN training loop: hinge loss, spectral-norm projection discriminator, EMA
generator, and differentiable translation augmentation (DiffAugment, Zhao et al. 2020) on both real
and fake images so the discriminator does not memorise classes with a dozen photos.

A plain function with progress and cooperative cancel; the full training state (both networks, the
EMA, both optimizers, history) is checkpointed each epoch so a redelivered job resumes.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from shared.errors import JobCanceled
from worker.datasets.base import ImageSplit
from worker.models.cgan import CGAN, CGANConfig, hinge_d_loss, hinge_g_loss, standing_statistics
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

EMA_DECAY = 0.995  # a window of ~200 steps: runs here are a few thousand steps long
BETAS = (0.0, 0.9)  # SNGAN's Adam settings for the hinge loss
D_LR_SCALE = 2.0  # two time-scale update rule: the discriminator learns faster


def translate(x: torch.Tensor, gen: torch.Generator, fraction: float = 0.125) -> torch.Tensor:
    """Shift each image by up to `fraction` of its size, filling with the border (white background)."""
    shift = (torch.rand(x.shape[0], 2, generator=gen, device=x.device) * 2 - 1) * fraction * 2
    theta = torch.zeros(x.shape[0], 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def random_conditions(split: ImageSplit, n: int, rng: np.random.Generator,
                      device: torch.device) -> dict[str, torch.Tensor]:
    """Conditions for fake images drawn from real rows, so type/colour pairs follow the data."""
    rows = rng.integers(0, len(split), size=n)
    return {k: torch.from_numpy(v[rows]).to(device) for k, v in split.conditions.items()}


@torch.no_grad()
def evaluate(model: CGAN, split: ImageSplit, batch_size: int, device: torch.device, seed: int) -> dict[str, float]:
    """Mean discriminator score on held-out real images and on as many EMA fakes of the same classes."""
    model.eval()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    real, fake, n = 0.0, 0.0, 0
    for x, cond in batches(split, batch_size, device):
        z = torch.randn(x.shape[0], model.config.latent_dim, generator=gen).to(device)
        real += model.discriminator(x * 2 - 1, cond).sum().item()
        fake += model.discriminator(model.ema(z, cond), cond).sum().item()
        n += x.shape[0]
    return {"d_real": real / max(n, 1), "d_fake": fake / max(n, 1)}


def train_cgan(config: CGANConfig, params: TrainParams, train: ImageSplit, test: ImageSplit, *,
               device: torch.device, progress: Progress, should_stop: ShouldStop,
               checkpoint: CheckpointIO | None = None, stratify_by: str | None = None) -> TrainResult:
    torch.manual_seed(params.seed)
    model = CGAN(config).to(device)
    g_opt = torch.optim.Adam(model.generator.parameters(), lr=params.learning_rate, betas=BETAS)
    d_opt = torch.optim.Adam(model.discriminator.parameters(), lr=params.learning_rate * D_LR_SCALE, betas=BETAS)
    train = train.stratified_head(params.max_train_examples, stratify_by or sorted(config.conditions)[0], params.seed)
    test = test.head(params.max_eval_examples)
    result = TrainResult(model=model)

    parts = {"model": model, "g_opt": g_opt, "d_opt": d_opt}
    resume(checkpoint, result, parts)
    if result.resumed_from_epoch:
        log.info("resuming GAN training after epoch %d", result.resumed_from_epoch)

    steps_per_epoch = max(1, math.ceil(len(train) / params.batch_size))
    total_steps = params.epochs * steps_per_epoch
    for epoch in range(result.resumed_from_epoch, params.epochs):
        model.train()
        model.ema.eval()
        rng = np.random.default_rng([params.seed, epoch])  # same batches after a resume
        order = rng.permutation(len(train))
        gen = torch.Generator(device="cpu").manual_seed(params.seed * 1000 + epoch)
        sums = {"d_loss": 0.0, "g_loss": 0.0, "d_real": 0.0, "d_fake": 0.0}
        for step in range(steps_per_epoch):
            if should_stop():
                raise JobCanceled()
            idx = order[step * params.batch_size:(step + 1) * params.batch_size]
            x, cond = to_batch(train, idx, device)
            x = x * 2 - 1  # [0, 1] -> [-1, 1], the generator's range
            b = x.shape[0]

            z = torch.randn(b, config.latent_dim, generator=gen).to(device)
            fake_cond = random_conditions(train, b, rng, device)
            fake = model.generator(z, fake_cond)
            real_logits = model.discriminator(translate(x, gen), cond)
            fake_logits = model.discriminator(translate(fake.detach(), gen), fake_cond)
            d_loss = hinge_d_loss(real_logits, fake_logits)
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()

            g_loss = hinge_g_loss(model.discriminator(translate(fake, gen), fake_cond))
            if not (torch.isfinite(d_loss) and torch.isfinite(g_loss)):
                raise FloatingPointError(f"GAN loss became non-finite at epoch {epoch + 1}, step {step + 1}")
            g_opt.zero_grad(set_to_none=True)
            g_loss.backward()
            g_opt.step()
            # Warm-up so early EMA weights are not dominated by the random initialisation.
            step_no = epoch * steps_per_epoch + step
            model.update_ema(min(EMA_DECAY, (1 + step_no) / (10 + step_no)))

            sums["d_loss"] += d_loss.item() * b
            sums["g_loss"] += g_loss.item() * b
            sums["d_real"] += real_logits.mean().item() * b
            sums["d_fake"] += fake_logits.mean().item() * b
            done = epoch * steps_per_epoch + step + 1
            progress(done / total_steps, f"epoch {epoch + 1}/{params.epochs}, batch {step + 1}/{steps_per_epoch}, "
                                         f"D {d_loss.item():.3f}, G {g_loss.item():.3f}")
        standing_statistics(model.ema, lambda n, r=rng: random_conditions(train, n, r, device), seed=params.seed)
        held_out = evaluate(model, test, params.batch_size, device, params.seed)
        row = {"epoch": epoch + 1, **{k: v / len(train) for k, v in sums.items()},
               "test_d_real": held_out["d_real"], "test_d_fake": held_out["d_fake"]}
        result.history.append(row)
        progress((epoch + 1) / params.epochs, f"epoch {epoch + 1}/{params.epochs} done, D {row['d_loss']:.3f}, "
                                              f"G {row['g_loss']:.3f}")
        save_epoch(checkpoint, result, parts)
    model.eval()
    return result

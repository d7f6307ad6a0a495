"""The conditional GAN training loop: hinge loss, spectral-norm projection discriminator, EMA
generator, differentiable augmentation (DiffAugment, Zhao et al. 2020: translation, with cutout as an option; the
same for real and fake images, never colour, which is a condition) so the discriminator does not
memorise classes with a dozen photos, the mode-seeking regulariser (MSGAN, Mao et al. 2019) against
within-condition collapse, and class-balanced draws so rare product types are trained far more
often than their share. Each is a `GANRecipe` switch, measured on and off (docs/BENCHMARKS.md).

A plain function with progress and cooperative cancel; the full training state (both networks, the
EMA, both optimizers, history) is checkpointed each epoch so a redelivered job resumes.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from shared.errors import JobCanceled
from worker.datasets.base import ImageSplit
from worker.models.cgan import CGAN, CGANConfig, hinge_d_loss, hinge_g_loss, standing_statistics
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
from worker.training.precision import as_float, autocast, autocast_dtype

log = logging.getLogger(__name__)

EMA_DECAY = 0.995  # a window of ~200 steps: runs here are a few thousand steps long
BETAS = (0.0, 0.9)  # SNGAN's Adam settings for the hinge loss
D_LR_SCALE = 2.0  # two time-scale update rule: the discriminator learns faster


@dataclass(frozen=True)
class GANRecipe:
    """How the GAN is trained beyond the common parameters. The defaults are the recipe the presets
    use; `GANRecipe.plain()` is the recipe before the mode-collapse work, for comparison."""

    mode_seeking: float = 1.0  # MSGAN weight: pairs of fakes of one condition pushed apart relative to their z
    balance_power: float = 0.5  # draws weighted count(type)^-power; 0: the catalog's own mix
    # DiffAugment's cutout besides translation: off, because its mid-grey squares came back as grey panels
    # behind a quarter of the seeds (docs/BENCHMARKS.md, "The bf16 preset, per type")
    cutout: bool = False
    aux_weight: float = 1.0  # the auxiliary classifier's cross-entropy (models whose config has one)

    @classmethod
    def plain(cls) -> GANRecipe:
        return cls(mode_seeking=0.0, balance_power=0.0, cutout=False, aux_weight=0.0)


def class_loss(classes: dict[str, torch.Tensor] | None, cond: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed cross-entropy of the auxiliary classifier's logits against the conditions (0 without one)."""
    if classes is None:
        return torch.zeros(())
    return sum((F.cross_entropy(logits, cond[name]) for name, logits in classes.items()), torch.zeros(()))


def cutout(x: torch.Tensor, gen: torch.Generator, fraction: float = 0.5) -> torch.Tensor:
    """Zero (mid-grey in [-1, 1]) a square of `fraction` of the side per image, its centre anywhere in
    the image, so it may hang over an edge (DiffAugment's cutout)."""
    b, _, h, w = x.shape
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top = torch.randint(0, h + 1, (b, 1, 1), generator=gen).to(x.device) - ch // 2
    left = torch.randint(0, w + 1, (b, 1, 1), generator=gen).to(x.device) - cw // 2
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)
    return x * (~inside)[:, None].to(x.dtype)


def diff_augment(x: torch.Tensor, gen: torch.Generator, recipe: GANRecipe) -> torch.Tensor:
    x = translate(x, gen)
    return cutout(x, gen) if recipe.cutout else x


def mode_seeking_loss(fake: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """MSGAN: the batch's two halves share conditions; the loss falls as their images differ more
    per unit of latent distance (1 / ratio, bounded by the epsilon)."""
    half = fake.shape[0] // 2
    images = (fake[:half] - fake[half:2 * half]).abs().mean(dim=(1, 2, 3))
    latents = (z[:half] - z[half:2 * half]).abs().mean(dim=1)
    return 1.0 / ((images / latents).mean() + 1e-5)


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


def paired_conditions(cond: dict[str, torch.Tensor], b: int) -> dict[str, torch.Tensor]:
    """The real batch's conditions for the fakes, the first half repeated: the fakes follow the same
    class mix as the reals the discriminator sees (so rarity is never a tell), and the halves pair up
    for the mode-seeking loss."""
    half = (b + 1) // 2
    return {k: torch.cat([v[:half], v[:half]])[:b] for k, v in cond.items()}


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
               checkpoint: CheckpointIO | None = None, stratify_by: str | None = None,
               recipe: GANRecipe | None = None) -> TrainResult:
    """Stops at the end of the step that crosses `params.max_minutes` (then the EMA's statistics
    and the held-out scores are computed for what it has); the result says so."""
    recipe = recipe or GANRecipe()
    torch.manual_seed(params.seed)
    model = CGAN(config).to(device)
    g_opt = torch.optim.Adam(model.generator.parameters(), lr=params.learning_rate, betas=BETAS)
    d_opt = torch.optim.Adam(model.discriminator.parameters(), lr=params.learning_rate * D_LR_SCALE, betas=BETAS)
    kind = stratify_by or sorted(config.conditions)[0]
    train = train.stratified_head(params.max_train_examples, kind, params.seed)
    test = test.head(params.max_eval_examples)
    result = TrainResult(model=model)

    parts = {"model": model, "g_opt": g_opt, "d_opt": d_opt}
    resume(checkpoint, result, parts)
    if result.resumed_from_epoch:
        log.info("resuming GAN training after epoch %d", result.resumed_from_epoch)

    budget = TimeBudget(params.max_minutes, result.history)
    steps_per_epoch = max(1, math.ceil(len(train) / params.batch_size))
    total_steps = params.epochs * steps_per_epoch
    dtype = autocast_dtype(device, params.mixed_precision)
    for epoch in range(result.resumed_from_epoch, params.epochs):
        if budget.out_of_time():
            result.stopped_early = result.stopped_early or budget.reason(epoch)
            break
        model.train()
        model.ema.eval()
        rng = np.random.default_rng([params.seed, epoch])  # same batches after a resume
        order = epoch_order(train, rng, kind, recipe.balance_power)
        gen = torch.Generator(device="cpu").manual_seed(params.seed * 1000 + epoch)
        sums = {"d_loss": 0.0, "g_loss": 0.0, "d_real": 0.0, "d_fake": 0.0, "mode_seeking": 0.0,
                "d_class": 0.0, "g_class": 0.0}
        seen, epoch_started = 0, time.monotonic()
        for step in range(steps_per_epoch):
            if should_stop():
                raise JobCanceled()
            idx = order[step * params.batch_size:(step + 1) * params.batch_size]
            x, cond = to_batch(train, idx, device)
            x = x * 2 - 1  # [0, 1] -> [-1, 1], the generator's range
            b = x.shape[0]

            z = torch.randn(b, config.latent_dim, generator=gen).to(device)
            fake_cond = paired_conditions(cond, b)
            with autocast(device, dtype):
                fake = model.generator(z, fake_cond)
                real_logits, real_classes = model.discriminator.judge(diff_augment(x, gen, recipe), cond)
                fake_logits = model.discriminator(diff_augment(fake.detach(), gen, recipe), fake_cond)
            real_logits, fake_logits, real_classes = (as_float(t) for t in (real_logits, fake_logits, real_classes))
            aux = recipe.aux_weight if real_classes is not None else 0.0
            d_loss = hinge_d_loss(real_logits, fake_logits)
            d_class = class_loss(real_classes, cond) if aux else torch.zeros(())
            d_opt.zero_grad(set_to_none=True)
            (d_loss + aux * d_class).backward()
            d_opt.step()

            with autocast(device, dtype):
                judged, fake_classes = model.discriminator.judge(diff_augment(fake, gen, recipe), fake_cond)
            judged, fake_classes, fake = as_float(judged), as_float(fake_classes), fake.float()
            g_loss = hinge_g_loss(judged)
            g_class = class_loss(fake_classes, fake_cond) if aux else torch.zeros(())
            ms = mode_seeking_loss(fake, z) if recipe.mode_seeking and b >= 2 else torch.zeros((), device=device)
            if not (torch.isfinite(d_loss) and torch.isfinite(g_loss)):
                raise FloatingPointError(f"GAN loss became non-finite at epoch {epoch + 1}, step {step + 1}")
            g_opt.zero_grad(set_to_none=True)
            (g_loss + recipe.mode_seeking * ms + aux * g_class).backward()
            g_opt.step()
            step_no = epoch * steps_per_epoch + step
            model.update_ema(warmed_decay(step_no, EMA_DECAY))

            sums["d_loss"] += d_loss.item() * b
            sums["g_loss"] += g_loss.item() * b
            sums["d_real"] += real_logits.mean().item() * b
            sums["d_fake"] += fake_logits.mean().item() * b
            sums["mode_seeking"] += ms.item() * b
            sums["d_class"] += d_class.item() * b
            sums["g_class"] += g_class.item() * b
            seen += b
            done = epoch * steps_per_epoch + step + 1
            progress(max(done / total_steps, budget.fraction()),
                     f"epoch {epoch + 1}/{params.epochs}, batch {step + 1}/{steps_per_epoch}, "
                     f"D {d_loss.item():.3f}, G {g_loss.item():.3f}")
            if budget.out_of_time():
                result.stopped_early = budget.reason(epoch + 1, step + 1, steps_per_epoch)
                break
        standing_statistics(model.ema, lambda n, r=rng: random_conditions(train, n, r, device), seed=params.seed)
        held_out = evaluate(model, test, params.batch_size, device, params.seed)
        row = {"epoch": epoch + 1, **{k: v / max(seen, 1) for k, v in sums.items()},
               "seconds": round(time.monotonic() - epoch_started, 1),
               "test_d_real": held_out["d_real"], "test_d_fake": held_out["d_fake"]}
        result.history.append(row)
        progress(min(1.0, max((epoch + 1) / params.epochs, budget.fraction())),
                 f"epoch {epoch + 1}/{params.epochs} done, D {row['d_loss']:.3f}, G {row['g_loss']:.3f}")
        save_epoch(checkpoint, result, parts)
        if result.stopped_early:
            break
    model.eval()
    return result

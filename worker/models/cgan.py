"""Multi-conditional GAN (seed 002, "multi-conditional GAN"): a DCGAN-family generator and
discriminator conditioned on several attributes at once (catalog articleType and baseColour).

Stabilizers for a few thousand 64x64 images on small hardware, as in SNGAN / Miyato & Koyama 2018:
- spectral normalization on every discriminator layer,
- a projection discriminator: D(x, y) = psi(phi(x)) + sum_c <embed_c(y_c), phi(x)>,
- the hinge loss, and an exponential moving average of the generator weights for sampling, with its
  BatchNorm statistics recomputed for the averaged weights after each epoch.
The generator takes its conditions as learned embeddings concatenated to z (and again per block
through conditional batch norm gains), so type and colour are controlled independently.

No I/O here; `to_checkpoint`/`from_checkpoint` carry the config inside every checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from worker.models.cvae import ConditionEmbedding, latent_noise
from worker.models.ema import update_ema
from worker.models.requests import Request, in_passes, per_request, stacked_conditions

CPU_PASS_IMAGES = 8  # images a CPU samples at once: past 8 the generator's per-image cost rises


@dataclass(frozen=True)
class CGANConfig:
    image_size: int = 64
    channels: int = 3
    conditions: dict[str, int] = field(default_factory=lambda: {"articleType": 10, "baseColour": 10})
    latent_dim: int = 128
    g_width: int = 32  # generator channels at the last block, doubled towards 4x4
    d_width: int = 32  # discriminator channels at the first block
    embed_dim: int = 32  # per condition
    # Feed z to every block's conditional batch norm as well as to the first layer (BigGAN's
    # hierarchical latent): with z only at the input the conditions' gains drown it out within a few
    # epochs, and all seeds of "black dress" become one image.
    noise_in_blocks: bool = False
    # An auxiliary classifier on the discriminator's features (AC-GAN, Odena et al. 2017), trained on
    # the real images' labels; the generator is rewarded when its fakes are classified as asked. The
    # projection alone teaches a small GAN colour (a global tint) long before shape, so in a CPU
    # budget the type was ignored. Training only: sampling checkpoints hold the generator.
    aux_classifier: bool = False
    # How the generator doubles its resolution: "transposed" (4x4 stride-2 transposed convolutions) or
    # "resize" (nearest-neighbour upsampling then a 3x3 convolution; Odena et al. 2016, "Deconvolution
    # and checkerboard artifacts": every output pixel gets the same number of kernel taps, so no
    # checkerboard).
    upsample: str = "transposed"

    @property
    def padded_size(self) -> int:
        return max(8, 2 ** math.ceil(math.log2(self.image_size)))

    @property
    def depth(self) -> int:
        return int(math.log2(self.padded_size // 4))


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"model": {"g_width": 8, "d_width": 8, "embed_dim": 8, "latent_dim": 32, "noise_in_blocks": True,
                       "aux_classifier": True},
             "train": {"epochs": 1, "batch_size": 32, "learning_rate": 2e-4, "max_train_examples": 256,
                       "max_eval_examples": 64}},
    # Resize-convolutions and no cutout (docs/BENCHMARKS.md, "The bf16 preset, per type"): the transposed
    # convolutions drew a checkerboard and the cutout's mid-grey squares came back as grey panels behind
    # a quarter of the seeds; without both, type adherence rose from 0.86 to 0.91 of real on the common
    # types and rare types from 0.52 to 0.72, for 14 % more time a step.
    "cpu": {"model": {"g_width": 32, "d_width": 32, "embed_dim": 32, "noise_in_blocks": True, "aux_classifier": True,
                      "upsample": "resize"},
            # the held-out D scores are a diagnostic: 1,024 images say as much as 4,138 in a quarter of the time
            "train": {"epochs": 20, "batch_size": 64, "learning_rate": 2e-4, "max_minutes": 25,
                      "max_eval_examples": 1024}},
    "gpu": {"model": {"g_width": 64, "d_width": 64, "embed_dim": 64, "noise_in_blocks": True,
                      "aux_classifier": True, "upsample": "resize"},
            "train": {"epochs": 100, "batch_size": 128, "learning_rate": 2e-4}},
}


class ConditionalBatchNorm(nn.Module):
    """BatchNorm whose scale and shift come from the condition embedding (per-block conditioning)."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Linear(cond_dim, channels)
        self.bias = nn.Linear(cond_dim, channels)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)
        nn.init.zeros_(self.gain.bias)
        nn.init.zeros_(self.bias.bias)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        gain = 1.0 + self.gain(e)[:, :, None, None]
        return self.norm(x) * gain + self.bias(e)[:, :, None, None]


class Generator(nn.Module):
    def __init__(self, config: CGANConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = ConditionEmbedding(config.conditions, config.embed_dim)
        e = self.embed.out_dim
        block_in = e + (config.latent_dim if config.noise_in_blocks else 0)
        top = config.g_width * 2 ** (config.depth - 1)
        self.top = top
        self.project = nn.Linear(config.latent_dim + e, top * 4 * 4)
        self.norms = nn.ModuleList()
        self.convs = nn.ModuleList()
        in_ch = top
        for i in reversed(range(config.depth)):  # 4 -> padded_size
            out_ch = config.g_width * 2 ** max(i - 1, 0)
            self.norms.append(ConditionalBatchNorm(in_ch, block_in))
            self.convs.append(upsampling(in_ch, out_ch, config.upsample))
            in_ch = out_ch
        self.to_rgb = nn.Sequential(nn.BatchNorm2d(in_ch), nn.ReLU(), nn.Conv2d(in_ch, config.channels, 3, 1, 1))

    def forward_embedded(self, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """z: [B, latent], e: [B, embed] (possibly interpolated) -> images [B, C, H, W] in [-1, 1]"""
        h = self.project(torch.cat([z, e], dim=1)).view(-1, self.top, 4, 4)
        block = torch.cat([e, z], dim=1) if self.config.noise_in_blocks else e
        for norm, conv in zip(self.norms, self.convs, strict=True):
            h = conv(F.relu(norm(h, block)))
        return _crop(torch.tanh(self.to_rgb(h)), self.config)

    def forward(self, z: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.forward_embedded(z, self.embed(cond))


def upsampling(in_ch: int, out_ch: int, how: str) -> nn.Module:
    """A layer that doubles height and width (CGANConfig.upsample)."""
    if how == "transposed":
        return nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1)
    if how == "resize":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_ch, out_ch, 3, 1, 1))
    raise ValueError(f"upsample must be 'transposed' or 'resize', not {how!r}")


class Discriminator(nn.Module):
    def __init__(self, config: CGANConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        in_ch = config.channels
        for i in range(config.depth):  # padded_size -> 4
            out_ch = config.d_width * 2**i
            layers += [spectral_norm(nn.Conv2d(in_ch, out_ch, 4, 2, 1)), nn.LeakyReLU(0.2)]
            in_ch = out_ch
        layers += [spectral_norm(nn.Conv2d(in_ch, in_ch, 3, 1, 1)), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.feature_dim = in_ch
        self.psi = spectral_norm(nn.Linear(in_ch, 1))
        # projection: one embedding table per condition, in feature space
        self.names = sorted(config.conditions)
        self.project = nn.ModuleDict({n: spectral_norm(nn.Embedding(config.conditions[n], in_ch))
                                      for n in self.names})
        self.classify = (nn.ModuleDict({n: nn.Linear(in_ch, config.conditions[n]) for n in self.names})
                         if config.aux_classifier else None)

    def forward(self, x: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """x: [B, C, H, W] in [-1, 1] -> realness logits [B]"""
        return self.judge(x, cond)[0]

    def judge(self, x: torch.Tensor, cond: dict[str, torch.Tensor]
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """Realness logits [B] and, with the auxiliary classifier, class logits per condition."""
        h = self.features(_pad(x, self.config)).sum(dim=(2, 3))  # [B, feature_dim]
        out = self.psi(h).squeeze(1)
        for n in self.names:
            out = out + (self.project[n](cond[n]) * h).sum(dim=1)
        classes = {n: head(h) for n, head in self.classify.items()} if self.classify is not None else None
        return out, classes


class CGAN(nn.Module):
    """The pair plus the EMA generator used for sampling."""

    def __init__(self, config: CGANConfig) -> None:
        super().__init__()
        self.config = config
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)
        self.ema = Generator(config)
        self.ema.load_state_dict(self.generator.state_dict())
        self.ema.requires_grad_(False)

    def update_ema(self, decay: float) -> None:
        """Average the weights; BatchNorm statistics are recomputed for them by `standing_statistics`."""
        update_ema(self.ema, self.generator, decay)


@torch.no_grad()
def standing_statistics(generator: Generator, cond_sampler: Any, batches: int = 32, batch_size: int = 64,
                        seed: int = 0) -> None:
    """Recompute the generator's BatchNorm running statistics for its current weights (BigGAN's
    "standing statistics"). The EMA's weights are an average the copied running statistics never
    saw; without this its samples are washed out and ignore z."""
    norms = [m for m in generator.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    was_training = generator.training
    generator.train()
    gen = torch.Generator().manual_seed(seed)
    device = next(generator.parameters()).device
    for _ in range(batches):
        z = torch.randn(batch_size, generator.config.latent_dim, generator=gen).to(device)
        generator(z, cond_sampler(batch_size))
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    generator.train(was_training)


def _pad(x: torch.Tensor, config: CGANConfig) -> torch.Tensor:
    extra = config.padded_size - config.image_size
    return F.pad(x, (extra // 2, extra - extra // 2, extra // 2, extra - extra // 2), value=1.0) if extra else x


def _crop(x: torch.Tensor, config: CGANConfig) -> torch.Tensor:
    extra = config.padded_size - config.image_size
    lo = extra // 2
    return x[..., lo:lo + config.image_size, lo:lo + config.image_size] if extra else x


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1]"""
    return (images.clamp(-1, 1) + 1.0) / 2.0


@torch.no_grad()
def sample(model: CGAN, cond: dict[str, int], seeds: list[int], *, temperature: float = 1.0,
           device: torch.device | str = "cpu", **_: Any) -> torch.Tensor:
    """Images for one condition set, one per seed, from the EMA generator: -> [n, C, H, W] in [0, 1].
    Sampling modes other than the prior do not apply to a GAN and are ignored."""
    return sample_many(model, [(cond, seeds)], temperature=temperature, device=device)[0]


@torch.no_grad()
def sample_many(model: CGAN, requests: list[Request], *, temperature: float = 1.0,
                device: torch.device | str = "cpu", **_: Any) -> list[torch.Tensor]:
    """`sample` for several (condition set, seeds) requests in one forward pass (jobs batched together)."""
    model.eval()
    z = torch.cat([latent_noise(seeds, model.config.latent_dim, temperature) for _, seeds in requests]).to(device)
    cond = stacked_conditions(requests, device)
    images = in_passes(lambda rows: model.ema(z[rows], {k: v[rows] for k, v in cond.items()}), len(z), device,
                       CPU_PASS_IMAGES)
    return per_request(to_unit(images).float().cpu(), requests)


@torch.no_grad()
def decode(model: CGAN, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Latents and condition embeddings (interpolations) -> images [B, C, H, W] in [0, 1] on the CPU."""
    model.eval()
    return to_unit(model.ema.forward_embedded(z, e)).float().cpu()


@torch.no_grad()
def embed(model: CGAN, cond: dict[str, torch.Tensor]) -> torch.Tensor:
    return model.ema.embed(cond)


def to_checkpoint(model: CGAN) -> dict[str, Any]:
    # Sampling needs only the EMA generator; the full pair lives in the training checkpoint.
    return {"family": "cgan", "config": asdict(model.config),
            "state_dict": {k: v.detach().cpu() for k, v in model.ema.state_dict().items()}}


def from_checkpoint(checkpoint: dict[str, Any]) -> CGAN:
    model = CGAN(CGANConfig(**checkpoint["config"]))
    model.ema.load_state_dict(checkpoint["state_dict"])
    return model.eval()

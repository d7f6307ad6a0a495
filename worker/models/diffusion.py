"""Class-conditional diffusion: a compact UNet denoiser in the EDM formulation (Karras et al. 2022),
conditioned on every attribute at once (catalog articleType and baseColour), with classifier-free
guidance (Ho & Salimans 2022).

- Preconditioning: D(x; σ, e) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ), e), so the network
  predicts a well-scaled target at every noise level; σ_data = 0.5 for images in [-1, 1].
- Conditions: one learned embedding per condition, concatenated (interpolable between classes), plus a
  learned "no condition" row used when training drops the conditions and for the guided sampler's
  unconditional pass.
- Sampling: EDM's deterministic Heun sampler on the ρ = 7 noise schedule. `steps` noise levels cost
  2·steps − 1 network evaluations, twice that with guidance ≠ 1 (the conditional and unconditional
  passes share a batch). The starting noise of each image comes from its own seed, so an image does not
  depend on what else is in the batch, and the same seed, version and settings give the same image.

No I/O here; `to_checkpoint`/`from_checkpoint` carry the config inside every checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from worker.models.ema import update_ema
from worker.models.requests import Request, in_passes, per_request, stacked_conditions

SIGMA_DATA = 0.5
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0
# Images a CPU samples at once: guidance doubles the rows, and past 32 rows the per-image cost rises.
CPU_PASS_IMAGES = 16


@dataclass(frozen=True)
class DiffusionConfig:
    image_size: int = 64
    channels: int = 3
    conditions: dict[str, int] = field(default_factory=lambda: {"articleType": 10, "baseColour": 10})
    width: int = 32  # channels at full resolution
    mults: tuple[int, ...] = (1, 2, 2, 2)  # channel multiplier per resolution level
    blocks: int = 1  # residual blocks per level (the decoder has one more, for the skip)
    attention_levels: tuple[int, ...] = ()  # levels (0 = full resolution) with self-attention
    embed_dim: int = 32  # per condition
    dropout: float = 0.0
    # Training
    p_uncond: float = 0.1  # share of training images whose conditions are dropped (guidance needs it)
    # Sampling defaults, used when a request leaves them out
    steps: int = 18
    guidance: float = 2.0

    @property
    def levels(self) -> int:
        return len(self.mults)

    @property
    def padded_size(self) -> int:
        """The image size rounded up so every level halves exactly (28 -> 28 with three levels)."""
        step = 2 ** (self.levels - 1)
        return math.ceil(self.image_size / step) * step


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"model": {"width": 8, "mults": (1, 2), "embed_dim": 8, "steps": 4},
             "train": {"epochs": 1, "batch_size": 32, "learning_rate": 2e-3, "max_train_examples": 256,
                       "max_eval_examples": 64},
             "eval_images": 64, "samples_per_class": 8},
    # Small and honest: at 2 cores a UNet trains a few thousand steps in the budget, enough for
    # silhouettes and colours, not for detail (docs/BENCHMARKS.md); the gpu preset is the real one.
    "cpu": {"model": {"width": 16, "mults": (1, 2, 2, 4), "embed_dim": 32, "steps": 12},
            "train": {"epochs": 40, "batch_size": 32, "learning_rate": 1e-3, "max_minutes": 25,
                      "max_eval_examples": 256},
            "eval_images": 256, "samples_per_class": 8},
    "gpu": {"model": {"width": 96, "mults": (1, 2, 3, 4), "blocks": 2, "attention_levels": (2, 3),
                      "embed_dim": 64, "dropout": 0.1, "steps": 32},
            "train": {"epochs": 200, "batch_size": 128, "learning_rate": 2e-4}},
}


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels // 4) or 1, channels)


class ResBlock(nn.Module):
    """Two 3x3 convolutions; the noise level and the conditions scale and shift the second one."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2, self.conv2 = _norm(out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.dropout(F.silu(h)))


class Attention(nn.Module):
    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.out(a.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """F(x_in, c_noise, e): the raw network inside the preconditioning."""

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        emb_dim = 4 * w
        self.names = sorted(config.conditions)
        # the last row of each table is "no condition"
        self.tables = nn.ModuleDict({n: nn.Embedding(config.conditions[n] + 1, config.embed_dim) for n in self.names})
        self.cond_dim = config.embed_dim * len(self.names)
        self.noise_mlp = nn.Sequential(nn.Linear(w, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.cond_mlp = nn.Sequential(nn.Linear(self.cond_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(config.channels, w, 3, padding=1)

        chans = [w * m for m in config.mults]
        self.down = nn.ModuleList()
        skips, ch = [w], w
        for level, out_ch in enumerate(chans):
            for _ in range(config.blocks):
                self.down.append(self._block(ch, out_ch, emb_dim, level))
                ch = out_ch
                skips.append(ch)
            if level < config.levels - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, config.dropout), Attention(ch),
                                  ResBlock(ch, ch, emb_dim, config.dropout)])
        self.up = nn.ModuleList()
        for level in reversed(range(config.levels)):
            out_ch = chans[level]
            for _ in range(config.blocks + 1):
                self.up.append(self._block(ch + skips.pop(), out_ch, emb_dim, level))
                ch = out_ch
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, config.channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def _block(self, in_ch: int, out_ch: int, emb_dim: int, level: int) -> nn.Module:
        block = ResBlock(in_ch, out_ch, emb_dim, self.config.dropout)
        if level in self.config.attention_levels:
            return nn.ModuleList([block, Attention(out_ch)])
        return block

    def embed(self, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """{name: LongTensor[B]} -> [B, cond_dim]; the value -1 means "no condition" for that name."""
        return torch.cat([self.tables[n](torch.where(cond[n] < 0, self.config.conditions[n], cond[n]))
                          for n in self.names], dim=1)

    def null_embedding(self, batch: int, device: torch.device | str) -> torch.Tensor:
        return self.embed({n: torch.full((batch,), -1, dtype=torch.long, device=device) for n in self.names})

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        half = self.config.width // 2
        freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
        angles = c_noise.float()[:, None] * 1000 * freqs[None]
        emb = self.noise_mlp(torch.cat([angles.cos(), angles.sin()], dim=1).to(x.dtype)) + self.cond_mlp(e)
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = self._run(layer, h, emb)
            hs.append(h)
        for layer in self.mid:
            h = self._run(layer, h, emb)
        for layer in self.up:
            if isinstance(layer, nn.Upsample):
                h = layer(h)
            else:
                h = self._run(layer, torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)

    @staticmethod
    def _run(layer: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if isinstance(layer, ResBlock):
            return layer(h, emb)
        if isinstance(layer, nn.ModuleList):  # a block and its attention
            return layer[1](layer[0](h, emb))
        return layer(h)


class Diffusion(nn.Module):
    """The denoiser being trained and its exponential moving average, which samples."""

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__()
        self.config = config
        self.net = UNet(config)
        self.ema = UNet(config)
        self.ema.load_state_dict(self.net.state_dict())
        self.ema.requires_grad_(False)

    def update_ema(self, decay: float) -> None:
        update_ema(self.ema, self.net, decay)


def denoise(net: UNet, x: torch.Tensor, sigma: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """D(x; σ, e), the preconditioned denoiser: x [B, C, H, W] at noise level σ [B] -> the clean estimate."""
    s = sigma.reshape(-1, 1, 1, 1).to(x.dtype)
    c_skip = SIGMA_DATA**2 / (s**2 + SIGMA_DATA**2)
    c_out = s * SIGMA_DATA / (s**2 + SIGMA_DATA**2).sqrt()
    c_in = 1 / (s**2 + SIGMA_DATA**2).sqrt()
    extra = net.config.padded_size - net.config.image_size
    x_in = F.pad(c_in * x, (0, extra, 0, extra)) if extra else c_in * x
    out = net(x_in, sigma.log() / 4, e)
    if extra:
        out = out[..., :net.config.image_size, :net.config.image_size]
    return c_skip * x + c_out * out.to(x.dtype)


def loss_weight(sigma: torch.Tensor) -> torch.Tensor:
    """EDM's λ(σ): every noise level contributes a unit-variance target."""
    return (sigma**2 + SIGMA_DATA**2) / (sigma * SIGMA_DATA) ** 2


def sigmas(steps: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The ρ = 7 schedule from σ_max to σ_min in `steps` levels, then 0: [steps + 1]."""
    if steps == 1:
        return torch.tensor([SIGMA_MAX, 0.0], device=device, dtype=torch.float64)
    i = torch.arange(steps, device=device, dtype=torch.float64)
    levels = (SIGMA_MAX ** (1 / RHO) + i / (steps - 1) * (SIGMA_MIN ** (1 / RHO) - SIGMA_MAX ** (1 / RHO))) ** RHO
    return torch.cat([levels, torch.zeros(1, device=device, dtype=torch.float64)])


def guided(net: UNet, x: torch.Tensor, sigma: float, e: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance: D_u + w (D_c − D_u); w = 1 is the conditional model alone (one pass),
    w = 0 the unconditional one."""
    s = torch.full((x.shape[0],), sigma, device=x.device, dtype=torch.float32)
    if guidance == 1.0:
        return denoise(net, x, s, e)
    null = net.null_embedding(x.shape[0], x.device)
    if guidance == 0.0:
        return denoise(net, x, s, null)
    both = denoise(net, torch.cat([x, x]), torch.cat([s, s]), torch.cat([e, null]))
    cond, uncond = both.chunk(2)
    return uncond + guidance * (cond - uncond)


@torch.no_grad()
def heun_sample(net: UNet, noise: torch.Tensor, e: torch.Tensor, *, steps: int, guidance: float) -> torch.Tensor:
    """EDM's deterministic 2nd-order sampler from unit noise [B, C, H, W] -> images in [-1, 1]."""
    levels = sigmas(steps, noise.device).tolist()
    x = noise * levels[0]
    for sigma, next_sigma in zip(levels[:-1], levels[1:], strict=True):
        d = (x - guided(net, x, sigma, e, guidance)) / sigma
        x_next = x + (next_sigma - sigma) * d
        if next_sigma > 0:  # Heun's correction, except into σ = 0
            d_next = (x_next - guided(net, x_next, next_sigma, e, guidance)) / next_sigma
            x_next = x + (next_sigma - sigma) * (d + d_next) / 2
        x = x_next
    return x


def start_noise(seeds: list[int], config: DiffusionConfig, temperature: float = 1.0) -> torch.Tensor:
    """[n, C, H, W]: each image's starting noise from its own seed, scaled by the temperature."""
    shape = (config.channels, config.image_size, config.image_size)
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]) * temperature


def _settings(model: Diffusion, steps: int | None, guidance: float | None) -> tuple[int, float]:
    return (steps if steps is not None else model.config.steps,
            float(guidance if guidance is not None else model.config.guidance))


@torch.no_grad()
def sample(model: Diffusion, cond: dict[str, int], seeds: list[int], *, temperature: float = 1.0,
           device: torch.device | str = "cpu", steps: int | None = None, guidance: float | None = None,
           **_: Any) -> torch.Tensor:
    """Images for one condition set, one per seed, from the EMA denoiser: -> [n, C, H, W] in [0, 1].
    `temperature` scales the starting noise; sampling modes other than the prior do not apply."""
    return sample_many(model, [(cond, seeds)], temperature=temperature, device=device, steps=steps,
                       guidance=guidance)[0]


@torch.no_grad()
def sample_many(model: Diffusion, requests: list[Request], *, temperature: float = 1.0,
                device: torch.device | str = "cpu", steps: int | None = None, guidance: float | None = None,
                **_: Any) -> list[torch.Tensor]:
    """`sample` for several (condition set, seeds) requests in one sampler run (jobs batched together)."""
    model.eval()
    z = torch.cat([start_noise(seeds, model.config, temperature) for _, seeds in requests]).to(device)
    e = model.ema.embed(stacked_conditions(requests, device))
    return per_request(decode(model, z.flatten(1), e, steps=steps, guidance=guidance), requests)


@torch.no_grad()
def decode(model: Diffusion, z: torch.Tensor, e: torch.Tensor, *, steps: int | None = None,
           guidance: float | None = None) -> torch.Tensor:
    """Starting noise (flattened, [B, C·H·W]) and condition embeddings, possibly interpolated ->
    images [B, C, H, W] in [0, 1] on the CPU, at the model's default steps and guidance."""
    model.eval()
    cfg = model.config
    steps, guidance = _settings(model, steps, guidance)
    noise = z.reshape(-1, cfg.channels, cfg.image_size, cfg.image_size)
    x = in_passes(lambda rows: heun_sample(model.ema, noise[rows], e[rows], steps=steps, guidance=guidance),
                  len(noise), noise.device, CPU_PASS_IMAGES)
    return ((x.clamp(-1, 1) + 1) / 2).float().cpu()


@torch.no_grad()
def embed(model: Diffusion, cond: dict[str, torch.Tensor]) -> torch.Tensor:
    return model.ema.embed(cond)


def latent(model: Diffusion, cond: dict[str, int], seed: int, device: Any) -> torch.Tensor:
    """[1, C·H·W]: the seed's starting noise, the diffusion model's latent for a hybrid's ends."""
    return start_noise([seed], model.config).flatten(1).to(device)


def to_checkpoint(model: Diffusion) -> dict[str, Any]:
    # Sampling needs only the EMA denoiser; the network being trained lives in the training checkpoint.
    return {"family": "diffusion", "config": asdict(model.config),
            "state_dict": {k: v.detach().cpu() for k, v in model.ema.state_dict().items()}}


def from_checkpoint(checkpoint: dict[str, Any]) -> Diffusion:
    config = dict(checkpoint["config"])
    config["mults"] = tuple(config["mults"])
    config["attention_levels"] = tuple(config["attention_levels"])
    model = Diffusion(DiffusionConfig(**config))
    model.ema.load_state_dict(checkpoint["state_dict"])
    return model.eval()

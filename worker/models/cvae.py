"""Conditional variational autoencoder (seed 003, section 3): a convolutional encoder and decoder
around a latent of 128, conditioned on one or more categorical attributes (Fashion-MNIST class;
later catalog type and colour).

Loss: reconstruction + KL(q(z|x,c) || N(0, I)) in closed form, 1/2 sum(exp(logvar) + mu^2 - 1 - logvar),
with the reparameterization z = mu + exp(logvar / 2) * eps. The paper uses a pixelwise MSE; we default to
a Bernoulli (BCE) likelihood because with unit-variance MSE on [0, 1] pixels the KL term outweighs the
reconstruction and samples collapse towards class means. `recon_loss="mse"` reproduces the paper.

No I/O here: the module is built from its config, and `to_checkpoint`/`from_checkpoint` carry the
config inside every checkpoint so a checkpoint rebuilds its own model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from worker.models.requests import Request, per_request, stacked_conditions


@dataclass(frozen=True)
class CVAEConfig:
    image_size: int = 28  # square images; padded internally to a power of two
    channels: int = 1
    conditions: dict[str, int] = field(default_factory=lambda: {"class": 10})  # name -> number of values
    latent_dim: int = 128
    width: int = 32  # channels of the first conv layer, doubled at each downsampling
    embed_dim: int = 16  # per condition
    recon_loss: str = "bce"  # "bce" or "mse" (the paper's)
    mean_condition: str | None = None  # condition whose per-value mean latents are kept (default: the first)

    @property
    def mean_over(self) -> str:
        return self.mean_condition or sorted(self.conditions)[0]

    @property
    def padded_size(self) -> int:
        return max(8, 2 ** math.ceil(math.log2(self.image_size)))

    @property
    def depth(self) -> int:
        return int(math.log2(self.padded_size // 4))  # downsamplings from padded_size to 4x4


PRESETS: dict[str, dict[str, Any]] = {
    # model size and default hyper-parameters; "tiny" trains in seconds for tests
    "tiny": {"model": {"width": 8, "embed_dim": 8},
             "train": {"epochs": 1, "batch_size": 64, "learning_rate": 2e-3, "max_train_examples": 512,
                       "max_eval_examples": 256}},
    "cpu": {"model": {"width": 32, "embed_dim": 16},
            "train": {"epochs": 10, "batch_size": 128, "learning_rate": 1e-3, "max_minutes": 25}},
    "gpu": {"model": {"width": 64, "embed_dim": 32},
            "train": {"epochs": 40, "batch_size": 256, "learning_rate": 1e-3}},
}


class ConditionEmbedding(nn.Module):
    """One learned embedding per condition, concatenated: {name: LongTensor[B]} -> [B, n_cond * embed_dim]."""

    def __init__(self, conditions: dict[str, int], embed_dim: int) -> None:
        super().__init__()
        self.names = sorted(conditions)
        self.tables = nn.ModuleDict({n: nn.Embedding(conditions[n], embed_dim) for n in self.names})
        self.out_dim = embed_dim * len(self.names)

    def forward(self, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([self.tables[n](cond[n]) for n in self.names], dim=1)


class CVAE(nn.Module):
    def __init__(self, config: CVAEConfig) -> None:
        super().__init__()
        self.config = config
        c, w, depth = config.channels, config.width, config.depth
        self.embed = ConditionEmbedding(config.conditions, config.embed_dim)

        enc: list[nn.Module] = []
        in_ch = c
        for i in range(depth):  # padded_size -> 4, channels w, 2w, 4w, ...
            out_ch = w * 2**i
            enc += [nn.Conv2d(in_ch, out_ch, 4, 2, 1), nn.BatchNorm2d(out_ch), nn.LeakyReLU(0.2)]
            in_ch = out_ch
        self.encoder = nn.Sequential(*enc)
        self.top_ch = in_ch
        flat = in_ch * 4 * 4
        self.to_mu = nn.Linear(flat + self.embed.out_dim, config.latent_dim)
        self.to_logvar = nn.Linear(flat + self.embed.out_dim, config.latent_dim)

        self.from_latent = nn.Linear(config.latent_dim + self.embed.out_dim, flat)
        dec: list[nn.Module] = []
        for i in reversed(range(1, depth)):  # 4 -> padded_size / 2
            out_ch = w * 2 ** (i - 1)
            dec += [nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1), nn.BatchNorm2d(out_ch), nn.ReLU()]
            in_ch = out_ch
        dec += [nn.ConvTranspose2d(in_ch, c, 4, 2, 1)]  # -> padded_size, logits
        self.decoder = nn.Sequential(*dec)
        # Filled after training (`fit_latent_statistics`): the mean latent of each class, for
        # class-mean sampling, and each latent dimension's spread, to pick dimensions worth traversing.
        self.register_buffer("class_means", torch.zeros(config.conditions[config.mean_over], config.latent_dim))
        self.register_buffer("latent_std", torch.zeros(config.latent_dim))

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        extra = self.config.padded_size - self.config.image_size
        return F.pad(x, (extra // 2, extra - extra // 2, extra // 2, extra - extra // 2)) if extra else x

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        extra = self.config.padded_size - self.config.image_size
        lo = extra // 2
        return x[..., lo:lo + self.config.image_size, lo:lo + self.config.image_size] if extra else x

    def encode(self, x: torch.Tensor, cond: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, C, H, W] in [0, 1] -> mu, logvar: [B, latent]"""
        h = self.encoder(self._pad(x)).flatten(1)  # [B, top_ch * 16]
        h = torch.cat([h, self.embed(cond)], dim=1)
        return self.to_mu(h), self.to_logvar(h).clamp(-30, 20)

    def decode_logits(self, z: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """z: [B, latent] -> logits [B, C, H, W]"""
        return self.decode_embedded_logits(z, self.embed(cond))

    def decode_embedded_logits(self, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """z: [B, latent], e: [B, embed] (possibly interpolated between classes) -> logits [B, C, H, W]"""
        h = self.from_latent(torch.cat([z, e], dim=1))
        h = F.relu(h).view(-1, self.top_ch, 4, 4)
        return self._crop(self.decoder(h))

    def decode(self, z: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """z: [B, latent] -> images [B, C, H, W] in [0, 1]"""
        return torch.sigmoid(self.decode_logits(z, cond))

    def forward(self, x: torch.Tensor, cond: dict[str, torch.Tensor],
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x, cond)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps  # reparameterization trick
        return self.decode_logits(z, cond), mu, logvar


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per example, closed form: [B, latent] -> [B]"""
    return 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum(dim=1)


def loss_terms(model: CVAE, logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor,
               logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over the batch of the per-image reconstruction loss (summed over pixels) and KL."""
    if model.config.recon_loss == "mse":
        recon = F.mse_loss(torch.sigmoid(logits), x, reduction="none")
    else:
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return recon.flatten(1).sum(dim=1).mean(), kl_divergence(mu, logvar).mean()


def latent_noise(seeds: list[int], latent_dim: int, temperature: float = 1.0) -> torch.Tensor:
    """One standard-normal latent per seed, drawn on the CPU so a seed gives the same z on any device."""
    rows = [torch.randn(latent_dim, generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(rows) * temperature  # [n, latent]


@torch.no_grad()
def sample(model: CVAE, cond: dict[str, int], seeds: list[int], *, temperature: float = 1.0,
           device: torch.device | str = "cpu", mode: str = "prior", spread: float = 0.5) -> torch.Tensor:
    """Images for one condition set, one per seed: -> [n, C, H, W] in [0, 1] on the CPU.

    mode "prior": z ~ N(0, temperature^2 I). mode "class_mean" (seed 003): z = the mean latent of
    the requested class plus noise of scale `spread`. On the catalog the latent carries the product
    type (the encoder sees the photo), so prior samples often ignore the type condition while
    class-mean samples keep it (see `ImageFamily.sampling_mode`, which picks the default)."""
    return sample_many(model, [(cond, seeds)], temperature=temperature, device=device, mode=mode, spread=spread)[0]


@torch.no_grad()
def sample_many(model: CVAE, requests: list[Request], *, temperature: float = 1.0,
                device: torch.device | str = "cpu", mode: str = "prior", spread: float = 0.5) -> list[torch.Tensor]:
    """`sample` for several (condition set, seeds) requests in one forward pass (jobs batched
    together): each request's images are the ones `sample` gives it alone."""
    model.eval()
    zs = []
    for cond, seeds in requests:
        if mode == "class_mean":
            z = latent_noise(seeds, model.config.latent_dim, spread).to(device)
            z = z + model.class_means[cond[model.config.mean_over]]
        else:
            z = latent_noise(seeds, model.config.latent_dim, temperature).to(device)
        zs.append(z)
    images = model.decode(torch.cat(zs), stacked_conditions(requests, device)).float().cpu()
    return per_request(images, requests)


def has_class_means(model: CVAE) -> bool:
    return bool(model.latent_std.abs().sum() > 0)


@torch.no_grad()
def decode(model: CVAE, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Latents and condition embeddings (interpolations) -> images [B, C, H, W] in [0, 1] on the CPU."""
    model.eval()
    return torch.sigmoid(model.decode_embedded_logits(z, e)).float().cpu()


@torch.no_grad()
def embed(model: CVAE, cond: dict[str, torch.Tensor]) -> torch.Tensor:
    return model.embed(cond)


@torch.no_grad()
def encode_mean(model: CVAE, x: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
    """Real items -> their posterior mean latents [B, latent] (for item hybrids and traversals)."""
    model.eval()
    return model.encode(x, cond)[0]


@torch.no_grad()
def fit_latent_statistics(model: CVAE, batches: Iterable[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> None:
    """Per-class mean of the posterior means, and the spread of each latent dimension across the data."""
    model.eval()
    over = model.config.mean_over
    sums = torch.zeros_like(model.class_means)
    counts = torch.zeros(sums.shape[0], device=sums.device)
    all_mu = []
    for x, cond in batches:
        mu = model.encode(x, cond)[0]
        sums.index_add_(0, cond[over], mu)
        counts.index_add_(0, cond[over], torch.ones_like(cond[over], dtype=counts.dtype))
        all_mu.append(mu)
    model.class_means.copy_(sums / counts.clamp(min=1)[:, None])
    if all_mu:
        model.latent_std.copy_(torch.cat(all_mu).std(dim=0, correction=0))


def to_checkpoint(model: CVAE) -> dict[str, Any]:
    return {"family": "cvae", "config": asdict(model.config),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def from_checkpoint(checkpoint: dict[str, Any]) -> CVAE:
    model = CVAE(CVAEConfig(**checkpoint["config"]))
    # Versions trained before latent statistics existed load with zero means.
    missing, unexpected = model.load_state_dict(checkpoint["state_dict"], strict=False)
    if unexpected or set(missing) - {"class_means", "latent_std"}:
        raise RuntimeError(f"checkpoint does not match the model: missing {missing}, unexpected {unexpected}")
    return model.eval()

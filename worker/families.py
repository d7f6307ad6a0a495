"""The model-family contract and the registry of families, outside `worker/models/` so that models,
trainers and handlers import it without a cycle.

An image family is what cog calls a predictor, with the training beside it: `config_for` builds
its config from a dataset and a preset, `train` runs the loop, `load`/`checkpoint` turn a checkpoint
into a model and back, `sample` answers a typed `SampleRequest`, and `embed`/`decode`/`latent` are
how hybrids and traversals move through it. The facts the API and the promotion gate need without
torch live in `shared/families.py`. A new family is a model file, a trainer, one `ImageFamily`
entry below and one row in that table; tests/test_family_contract.py runs over every entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from types import ModuleType
from typing import Any, Protocol

import torch

from shared.errors import ModelUnloadable
from shared.families import FACTS, FamilyFacts
from worker.datasets.base import ImageDataset
from worker.models import cgan, classifier, cvae, diffusion, lm
from worker.training.cgan_trainer import GANRecipe, train_cgan
from worker.training.common import TrainResult
from worker.training.cvae_trainer import train_cvae
from worker.training.diffusion_trainer import DiffusionRecipe, train_diffusion


@dataclass(frozen=True)
class SampleRequest:
    """One condition set, one image per seed: everything a family's sampler may read. `options`
    holds the family-specific fields its facts name (`sampling`), e.g. steps and guidance."""

    cond: dict[str, int]
    seeds: list[int]
    temperature: float = 1.0
    mode: str = "auto"  # auto | prior | class_mean
    spread: float = 0.5
    options: dict[str, Any] = field(default_factory=dict)


def batch_key(request: SampleRequest) -> tuple:
    """What requests must share to be sampled in one forward pass (everything but conditions and seeds)."""
    return request.temperature, request.mode, request.spread, tuple(sorted(request.options.items()))


class Trainer(Protocol):
    def __call__(self, config: Any, params: Any, train: Any, test: Any, *, device: torch.device,
                 progress: Callable[[float, str], None], should_stop: Callable[[], bool],
                 checkpoint: Any = None, stratify_by: str | None = None, recipe: Any = None) -> TrainResult: ...


def _prior_latent(model: Any, cond: dict[str, int], seed: int, device: Any) -> torch.Tensor:
    return cvae.latent_noise([seed], model.config.latent_dim).to(device)


def _cvae_latent(model: Any, cond: dict[str, int], seed: int, device: Any) -> torch.Tensor:
    """A class's mean latent where the model has fitted them (prior samples drift off the class on the
    catalog), else the seed's prior sample."""
    if cvae.has_class_means(model):
        return model.class_means[cond[model.config.mean_over]][None].clone()
    return _prior_latent(model, cond, seed, device)


@dataclass(frozen=True)
class ImageFamily:
    """A generative image family: its module (config, PRESETS, the nn.Module, sample/embed/decode,
    to_checkpoint/from_checkpoint) and its trainer."""

    module: ModuleType
    config: type
    trainer: Trainer
    curves: dict[str, str]  # loss-curve label -> history key
    curve_unit: str
    recipe: Callable[..., Any] | None = None  # the trainer's recipe type, built from the preset's "recipe"
    # [1, latent] for a class end of a hybrid or the start of a traversal
    latent: Callable[[Any, dict[str, int], int, Any], torch.Tensor] = _prior_latent
    # images [B, C, H, W] in [0, 1] and their conditions -> [B, latent] (encoders only)
    encode: Callable[[Any, torch.Tensor, dict[str, torch.Tensor]], torch.Tensor] | None = None
    # whether a trained model has fitted class means, which "auto" sampling then uses
    has_class_means: Callable[[Any], bool] = lambda model: False

    @property
    def name(self) -> str:
        return self.module.__name__.rsplit(".", 1)[-1]

    @property
    def facts(self) -> FamilyFacts:
        return FACTS[self.name]

    @property
    def presets(self) -> dict[str, dict[str, Any]]:
        return self.module.PRESETS

    def config_for(self, dataset: ImageDataset, preset: str, **overrides: Any) -> Any:
        base: dict[str, Any] = {"image_size": dataset.image_size, "channels": dataset.channels,
                                "conditions": {k: len(v) for k, v in dataset.vocabulary.items()}}
        if "mean_condition" in {f.name for f in fields(self.config)}:
            base["mean_condition"] = type_condition(dataset)
        return replace(self.config(**base), **{**self.presets[preset]["model"], **overrides})

    def recipe_for(self, preset: str) -> Any:
        return self.recipe(**self.presets[preset].get("recipe", {})) if self.recipe else None

    def train(self, config: Any, params: Any, train: Any, test: Any, **kwargs: Any) -> TrainResult:
        recipe = kwargs.pop("recipe", None)
        return self.trainer(config, params, train, test, **kwargs, **({"recipe": recipe} if recipe else {}))

    def load(self, checkpoint: dict[str, Any]) -> Any:
        return self.module.from_checkpoint(checkpoint)

    def checkpoint(self, model: Any) -> dict[str, Any]:
        return self.module.to_checkpoint(model)

    def sampling_mode(self, model: Any, requested: str = "auto") -> str:
        """"auto": class means where the model has fitted them (on the catalog a cvae's prior
        samples ignore the product type), the prior otherwise."""
        if requested != "auto":
            return requested
        return "class_mean" if self.has_class_means(model) else "prior"

    def sample(self, model: Any, request: SampleRequest, device: Any) -> torch.Tensor:
        """[n, C, H, W] in [0, 1] on the CPU, one image per seed; the same seeds give the same images."""
        return self.module.sample(model, request.cond, request.seeds, temperature=request.temperature,
                                  device=device, mode=self.sampling_mode(model, request.mode),
                                  spread=request.spread, **request.options)

    def sample_many(self, model: Any, requests: list[SampleRequest], device: Any) -> list[torch.Tensor]:
        """Several requests (jobs batched together) in one forward pass; each gets exactly the images
        `sample` would give it alone. They must share `batch_key`."""
        first = requests[0]
        if any(batch_key(r) != batch_key(first) for r in requests):
            raise ValueError("requests batched together must share their sampling settings")
        return self.module.sample_many(model, [(r.cond, r.seeds) for r in requests], temperature=first.temperature,
                                       device=device, mode=self.sampling_mode(model, first.mode),
                                       spread=first.spread, **first.options)

    def sampling_settings(self, model: Any, options: dict[str, Any]) -> dict[str, Any]:
        """The family-only settings a sample used, the model's defaults filled in (for outputs)."""
        return {name: options.get(name, getattr(model.config, name)) for name in sorted(self.facts.sampling)}

    def eval_images(self, preset: str, default: int) -> int:
        """Generated images per evaluation: the preset's own figure where its sampling is dear."""
        return self.presets[preset].get("eval_images", default)

    def samples_per_class(self, preset: str) -> int:
        """Images per class in a version's sample grids."""
        return self.presets[preset].get("samples_per_class", 16)

    def embed(self, model: Any, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.module.embed(model, cond)

    def decode(self, model: Any, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return self.module.decode(model, z, e)


def type_condition(dataset: ImageDataset) -> str:
    return (dataset.roles or {}).get("type") or sorted(dataset.vocabulary)[0]


IMAGE_FAMILIES: dict[str, ImageFamily] = {family.name: family for family in (
    ImageFamily(cvae, cvae.CVAEConfig, train_cvae, {"train": "train_loss", "held-out": "test_loss"},
                "loss per image (nats)", latent=_cvae_latent, encode=cvae.encode_mean,
                has_class_means=cvae.has_class_means),
    ImageFamily(cgan, cgan.CGANConfig, train_cgan, {"discriminator": "d_loss", "generator": "g_loss"},
                "hinge loss", recipe=GANRecipe),
    ImageFamily(diffusion, diffusion.DiffusionConfig, train_diffusion,
                {"train": "train_loss", "held-out": "test_loss"}, "weighted denoising loss",
                recipe=DiffusionRecipe, latent=diffusion.latent),
)}
# Every family by name, for loading checkpoints (the description model and the classifier included).
LOADERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    **{name: family.load for name, family in IMAGE_FAMILIES.items()},
    "lm": lm.from_checkpoint, "classifier": classifier.from_checkpoint}


def load_checkpoint(family: str, checkpoint: dict[str, Any], ref: str | None = None) -> Any:
    """The network of a stored checkpoint; `ModelUnloadable` naming the version and the mismatch when
    its config or weights do not fit this code (an unknown config field, a missing tensor)."""
    try:
        return LOADERS[family](checkpoint)
    except (TypeError, KeyError, ValueError, RuntimeError) as exc:
        raise ModelUnloadable(f"model {ref or family} cannot be loaded by this worker's code, which differs from "
                              f"the code that wrote it: {exc}") from exc


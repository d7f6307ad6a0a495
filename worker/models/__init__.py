"""Model families. Each image module holds a config dataclass, the nn.Module (no I/O),
`sample`/`decode`/`embed` and `to_checkpoint`/`from_checkpoint`, the config travelling inside every
checkpoint. `IMAGE_FAMILIES` says, once, how each family is built, trained and plotted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from worker.models import cgan, classifier, cvae, lm
from worker.training.cgan_trainer import train_cgan
from worker.training.cvae_trainer import train_cvae


@dataclass(frozen=True)
class ImageFamily:
    module: ModuleType
    config: type
    train: Callable[..., Any]
    curves: dict[str, str]  # loss-curve label -> history key
    curve_unit: str
    encodes: bool  # has an encoder: item hybrids, style mixing, class means

    @property
    def presets(self) -> dict[str, dict[str, Any]]:
        return self.module.PRESETS

    def sampling_mode(self, model: Any, requested: str = "auto") -> str:
        """"auto": class means where the model has fitted them (on the catalog a cvae's prior
        samples ignore the product type), the prior otherwise."""
        if requested != "auto":
            return requested
        return "class_mean" if self.encodes and cvae.has_class_means(model) else "prior"


IMAGE_FAMILIES: dict[str, ImageFamily] = {
    "cvae": ImageFamily(cvae, cvae.CVAEConfig, train_cvae, {"train": "train_loss", "held-out": "test_loss"},
                        "loss per image (nats)", encodes=True),
    "cgan": ImageFamily(cgan, cgan.CGANConfig, train_cgan, {"discriminator": "d_loss", "generator": "g_loss"},
                        "hinge loss", encodes=False),
}
# Every family by name, for loading checkpoints (the description model and classifier included).
FAMILIES: dict[str, ModuleType] = {name: family.module for name, family in IMAGE_FAMILIES.items()} | {
    "lm": lm, "classifier": classifier}

"""The domain classifier (seed 001): a small ResNet over a dataset's images with one head per
condition (Fashion-MNIST: `class`; the catalog: product type and colour). Its pooled feature layer
is the feature extractor for evaluation and nearest-item search, so no Inception weights are ever
downloaded. The config dataclass travels in every checkpoint, with the temperature per head fitted
on held-out images, so that the probabilities it reports are calibrated.

Images of any size come in; the network sees them at `input_size` (area-downsampled): on two CPU
cores a 64 px catalog photo at 32 px costs a quarter of the compute, and four stages at 32 px
reach further than three at 64 px in the same time (measured, docs/BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class ClassifierConfig:
    image_size: int = 28
    channels: int = 1
    conditions: dict[str, int] = field(default_factory=lambda: {"class": 10})  # head name -> classes
    width: int = 32  # channels of the first stage; doubled at each later stage
    blocks: int = 2  # residual blocks per stage
    dropout: float = 0.2
    stages: int = 3  # each after the first halves the resolution
    input_size: int | None = None  # the height the network sees; None: the images' own
    # The central share of the width kept before resizing: the catalog's 60x80 originals are
    # letterboxed into 64x64, so a quarter of each image's width is white margin (0.75 drops it and
    # gives the product more of the network's pixels at the same cost).
    crop_width: float = 1.0
    # Average the logits and features of the image and its mirror image at inference (products are
    # left-right symmetric in meaning; training flips them too).
    flip_average: bool = False
    temperatures: dict[str, float] = field(default_factory=dict)  # head -> fitted softmax temperature
    # head -> log share of each class in the training images: subtracted from the logits, it gives the
    # class-balanced reading ("is this a jumpsuit?" whatever jumpsuits' share of the catalog)
    log_priors: dict[str, list[float]] = field(default_factory=dict)
    # Heads that also see the photo's colour statistics (a histogram of the product's pixels): colour
    # is a property of every pixel, cheap to state exactly and lost in 32 px convolutions.
    colour_heads: tuple[str, ...] = ()

    @property
    def feature_dim(self) -> int:
        return self.width * 2 ** (self.stages - 1)


# `train` holds the TrainParams defaults and the classifier's recipe (see classifier_trainer.Recipe).
# "crop_letterbox": crop_width is measured on the dataset (`letterbox_width`), not set.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"model": {"width": 8, "blocks": 1, "stages": 3, "input_size": 32},
             "train": {"epochs": 1, "batch_size": 64, "learning_rate": 3e-3, "max_train_examples": 512,
                       "max_eval_examples": 256}},
    "cpu": {"model": {"width": 24, "blocks": 2, "stages": 4, "input_size": 40, "flip_average": True},
            "crop_letterbox": True,
            "train": {"epochs": 16, "batch_size": 128, "learning_rate": 3e-3, "max_minutes": 25},
            "recipe": {"balance_power": 0.0},
            # Where training runs in fp32 (a CPU without native bf16), an epoch at 40 px costs about
            # twice as long: at 32 px it costs half, and the shorter training budget leaves the job's
            # other steps (loading, evaluation, the feature index) room within 30 minutes. How many of
            # the 16 epochs fit depends on the cores: 14 on AVX-512F, 9 on AVX2 (docs/BENCHMARKS.md).
            "fp32": {"model": {"input_size": 32}, "train": {"max_minutes": 22}}},
    "gpu": {"model": {"width": 32, "blocks": 2, "stages": 4, "input_size": 64, "flip_average": True},
            "crop_letterbox": True,
            "train": {"epochs": 30, "batch_size": 256, "learning_rate": 3e-3}},
}


def preset_for(preset: str, *, fp32: bool = False) -> dict[str, Any]:
    """A preset's model, train and recipe settings, with its `fp32` variant merged in when training
    will run without mixed precision (`precision.autocast_dtype` is None)."""
    chosen = PRESETS[preset]
    variant = chosen.get("fp32", {}) if fp32 else {}
    return {**chosen, **{part: {**chosen.get(part, {}), **variant[part]} for part in variant}}


def config_for(dataset: Any, preset: str, *, fp32: bool = False, **overrides: Any) -> ClassifierConfig:
    """The config a preset gives on a dataset: a head per condition, colour statistics for the
    colour head of an RGB dataset that names one, and the letterbox margins cropped."""
    colour = (dataset.roles or {}).get("colour")
    base = ClassifierConfig(image_size=dataset.image_size, channels=dataset.channels,
                            conditions={k: len(v) for k, v in dataset.vocabulary.items()},
                            colour_heads=(colour,) if colour and dataset.channels == 3 else ())
    chosen = preset_for(preset, fp32=fp32)
    measured = {"crop_width": letterbox_width(dataset.train.images)} if chosen.get("crop_letterbox") else {}
    return replace(base, **{**chosen["model"], **measured, **overrides})


MARGIN = 0.99  # a column is letterbox margin when it is all background in this share of the images


def letterbox_width(images: np.ndarray, sample: int = 2000) -> float:
    """The central share of the width that holds the products: 1 less the white columns found at both
    edges of (nearly) every image, the same number each side. uint8 [N, H, W, C]; 1.0 for grey-scale
    or unframed images."""
    if images.ndim != 4 or images.shape[-1] != 3 or not len(images):
        return 1.0
    rows = np.linspace(0, len(images) - 1, min(sample, len(images))).astype(int)
    white = (images[rows].min(axis=-1) >= BACKGROUND * 255).all(axis=1)  # [n, W]: column all background
    margin = white.mean(axis=0) >= MARGIN
    width = images.shape[2]
    left = next((i for i in range(width) if not margin[i]), width)
    right = next((i for i in range(width) if not margin[width - 1 - i]), width)
    side = min(left, right, (width - 1) // 2)
    return round((width - 2 * side) / width, 4)


HIST_BINS = 4  # per RGB channel
COLOUR_STATS = HIST_BINS ** 3 + 3 + 1  # joint histogram, mean colour, share of product pixels
BACKGROUND = 0.9  # a pixel whose darkest channel is above this is background (the catalog shoots on white)


def colour_statistics(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> [B, COLOUR_STATS]: the square root of the joint RGB histogram of the
    product's (non-background) pixels, their mean colour, and their share of the image (white
    products on white leave few)."""
    if x.shape[1] != 3:
        raise ValueError("colour statistics need RGB images")
    x = x.detach().float()
    b = x.shape[0]
    mask = (x.min(dim=1).values < BACKGROUND).float().flatten(1)  # [B, HW]
    q = (x.clamp(0, 0.999) * HIST_BINS).long()
    index = (q[:, 0] * HIST_BINS + q[:, 1]) * HIST_BINS + q[:, 2]  # [B, H, W]
    hist = torch.zeros(b, HIST_BINS ** 3, device=x.device).scatter_add_(1, index.flatten(1), mask)
    count = mask.sum(dim=1, keepdim=True)
    mean = (x.flatten(2) * mask[:, None]).sum(dim=2) / count.clamp(min=1)
    return torch.cat([(hist / count.clamp(min=1)).sqrt(), mean, count / mask.shape[1]], dim=1)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                         if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Classifier(nn.Module):
    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.stem = nn.Sequential(nn.Conv2d(config.channels, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        stages, c_in = [], w
        for stage in range(config.stages):
            c_out = w * 2 ** stage
            for block in range(config.blocks):
                stages.append(BasicBlock(c_in, c_out, 2 if stage > 0 and block == 0 else 1))
                c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.dropout = nn.Dropout(config.dropout)
        self.heads = nn.ModuleDict({
            name: nn.Linear(config.feature_dim + (COLOUR_STATS if name in config.colour_heads else 0), n)
            for name, n in config.conditions.items()})

    def input_shape(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the network sees for images of this size."""
        kept = max(1, round(width * self.config.crop_width))
        size = self.config.input_size or height
        return size, max(1, round(size * kept / height))

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """Images cropped and resized to what the network sees (area downsampling keeps every pixel's colour)."""
        h, w = x.shape[-2:]
        kept = max(1, round(w * self.config.crop_width))
        if kept < w:
            left = (w - kept) // 2
            x = x[..., left:left + kept]
        shape = self.input_shape(h, w)
        if tuple(x.shape[-2:]) == shape:
            return x
        return F.interpolate(x, size=shape, mode="area" if x.shape[-2] >= shape[0] else "bilinear")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] in [0, 1] -> [B, feature_dim]: the pooled last stage (eval mode, as `infer`)."""
        return self.infer(x)[1]

    def infer(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Inference in eval mode: raw logits per head and pooled features, averaged over the image and
        its mirror image when the config says so."""
        x = self.resize(x)
        features = self.pooled(x)
        logits = self.head_logits(features, x)
        if self.config.flip_average:
            mirror = x.flip(-1)
            mirrored = self.pooled(mirror)
            other = self.head_logits(mirrored, mirror)
            logits = {name: (out + other[name]) / 2 for name, out in logits.items()}
            features = (features + mirrored) / 2
        return logits, features

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Images already at `input_size` -> pooled features (the training loop resizes once)."""
        return self.stages(self.stem(x * 2 - 1)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor, *, resized: bool = False) -> dict[str, torch.Tensor]:
        """[B, C, H, W] in [0, 1] -> raw logits per head, {name: [B, classes]} (no temperature)."""
        x = x if resized else self.resize(x)
        return self.head_logits(self.dropout(self.pooled(x)), x)

    def head_logits(self, features: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pooled features (and the resized images, for the colour heads) -> raw logits per head."""
        stats = colour_statistics(x) if self.config.colour_heads else None
        return {name: head(torch.cat([features, stats], dim=1) if name in self.config.colour_heads else features)
                for name, head in self.heads.items()}

    def temperature(self, head: str) -> float:
        return float(self.config.temperatures.get(head, 1.0))


@torch.no_grad()
def predict(model: Classifier, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Calibrated class probabilities per head, {name: [B, classes]}."""
    return predict_with_features(model, x)[0]


@torch.no_grad()
def predict_with_features(model: Classifier, x: torch.Tensor, *, balanced: bool = False
                          ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One pass: class probabilities per head and the pooled features [B, feature_dim] that the
    nearest-item index compares. `balanced`: as if every class were equally common in the catalog
    (logit adjustment, Menon et al. 2021), for judging rare classes; otherwise calibrated for the
    catalog's own mix."""
    model.eval()
    raw, features = model.infer(x)
    out = {}
    for name, logits in raw.items():  # eval: no dropout
        prior = model.config.log_priors.get(name)
        if balanced and prior is not None:
            logits = logits - torch.tensor(prior, dtype=logits.dtype, device=logits.device)
        out[name] = (logits / model.temperature(name)).softmax(dim=-1)
    return out, features


def to_checkpoint(model: Classifier) -> dict[str, Any]:
    return {"family": "classifier", "config": asdict(model.config),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def from_checkpoint(checkpoint: dict[str, Any]) -> Classifier:
    config = dict(checkpoint["config"])
    config["colour_heads"] = tuple(config.get("colour_heads", ()))
    model = Classifier(ClassifierConfig(**config))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()

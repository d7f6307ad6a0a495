"""Evaluating a generative image model with the domain classifier (issue 5): classifier-FID and KID
(torchmetrics, with the classifier's pooled features instead of Inception, so nothing is
downloaded) against held-out real images, next to the real-vs-real floor measured the same way, and
class adherence: the share of generated images the classifier assigns to the requested type (and
colour), per class and overall.

Generated images are drawn with the held-out set's own conditions, one per held-out image, so
the two distributions compared have the same mix of classes and the FID measures the images, not
the class balance.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from worker.datasets.base import ImageSplit
from worker.models.classifier import Classifier

Sampler = Callable[[dict[str, int], list[int]], torch.Tensor]  # (conditions, seeds) -> [n, C, H, W] in [0, 1]
BATCH = 128


class ClassifierFeatures(nn.Module):
    """The classifier's pooled feature layer as a torchmetrics feature extractor."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model.eval()
        self.num_features = model.config.feature_dim

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x.float())


def to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, C] -> float [N, C, H, W] in [0, 1] (read-only arrays, e.g. from a file, are fine)."""
    pixels = torch.as_tensor(np.ascontiguousarray(images) if images.flags.writeable else images.copy())
    return pixels.permute(0, 3, 1, 2).float().div_(255.0)


def distances(features: ClassifierFeatures, real: torch.Tensor, fake: torch.Tensor, device: torch.device,
              seed: int = 0) -> dict[str, float]:
    """FID and KID (mean, std over subsets) between two sets of [0, 1] images."""
    n = min(len(real), len(fake))
    fid = FrechetInceptionDistance(feature=features, reset_real_features=True).to(device)
    with warnings.catch_warnings():  # KID keeps every feature vector: a few MB at our sizes
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=features, subset_size=min(100, n), subsets=50).to(device)
    for metric in (fid, kid):
        for start in range(0, len(real), BATCH):
            metric.update(real[start:start + BATCH].to(device), real=True)
        for start in range(0, len(fake), BATCH):
            metric.update(fake[start:start + BATCH].to(device), real=False)
    torch.manual_seed(seed)  # KID draws random subsets
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}


@dataclass
class Evaluation:
    fid: float
    kid: float
    kid_std: float
    floor_fid: float  # real (train) vs real (held-out), the same number of images
    floor_kid: float
    adherence: dict[str, float]  # condition -> share of images classified as requested
    per_class: dict[str, float]  # type -> type adherence
    images: int
    real_accuracy: dict[str, float]  # condition -> the judge's accuracy on the same held-out real images
    real_per_class: dict[str, float]  # type -> the judge's recall on those real images
    # mean pairwise feature distance of generated images within one condition set over that of real
    # photos of the same set (1.0: as varied as real; a collapsed model approaches 0), overall and
    # per condition set ("Black Dresses")
    diversity: float = float("nan")
    per_condition_diversity: dict[str, float] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        relative = {k: round(v / self.real_per_class[k], 4) for k, v in self.per_class.items()
                    if self.real_per_class.get(k)}
        return {"fid": round(self.fid, 3), "kid": round(self.kid, 5), "kid_std": round(self.kid_std, 5),
                "floor": {"fid": round(self.floor_fid, 3), "kid": round(self.floor_kid, 5)},
                "adherence": {k: round(v, 4) for k, v in self.adherence.items()},
                "per_class_adherence": {k: round(v, 4) for k, v in self.per_class.items()},
                "real_accuracy": {k: round(v, 4) for k, v in self.real_accuracy.items()},
                "real_per_class_accuracy": {k: round(v, 4) for k, v in self.real_per_class.items()},
                # generated adherence over the judge's accuracy on real photos of the same type: 1.0 means
                # the images are recognised as often as real ones
                "relative_per_class_adherence": relative, "images": self.images,
                **({"diversity": round(self.diversity, 4),
                    "per_condition_diversity": {k: round(v, 4) for k, v in self.per_condition_diversity.items()}}
                   if np.isfinite(self.diversity) else {})}


def blind_judge(evaluation: Evaluation, judge_accuracy: float | None, min_accuracy: float) -> str | None:
    """Why this evaluation can give no FID-based verdict, or None when it can: a judge below the
    accuracy floor sees too little to tell images apart, and a real-vs-real floor of zero means its
    features do not separate images at all."""
    if judge_accuracy is not None and judge_accuracy < min_accuracy:
        return f"the judge's held-out type accuracy {judge_accuracy:.3f} is below {min_accuracy:g}"
    if not np.isfinite(evaluation.floor_fid) or evaluation.floor_fid < 1e-3:  # finite samples keep a real floor > 0
        return (f"the real-vs-real floor is degenerate (FID {evaluation.floor_fid:.3g}): the judge's features do "
                "not tell real images apart")
    return None


def evaluate_generator(sample: Sampler, classifier: Classifier, train: ImageSplit, test: ImageSplit,
                       vocabulary: dict[str, list[str]], type_condition: str, *, max_images: int, seed: int,
                       device: torch.device) -> Evaluation:
    """Generate one image per held-out image (its conditions, seed + index), then compare and classify."""
    if max_images < len(test):  # a random subset keeps the held-out mix of classes
        test = test.take(np.sort(np.random.default_rng(seed).permutation(len(test))[:max_images]))
    rows = np.arange(len(test))
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    names = sorted(test.conditions)
    for i in rows:
        groups[tuple(int(test.conditions[k][i]) for k in names)].append(int(i))
    fake = torch.zeros(len(test), *to_float(test.images[:1]).shape[1:])
    for key, members in groups.items():
        fake[members] = sample(dict(zip(names, key, strict=True)), [seed + i for i in members]).cpu()
    real = to_float(test.images)
    features = ClassifierFeatures(classifier).to(device)
    generated = distances(features, real, fake, device, seed)
    reference = to_float(train.images[np.random.default_rng(seed).permutation(len(train))[:len(test)]])
    floor = distances(features, real, reference, device, seed)

    hits, real_hits = _hits(classifier, fake, test, device), _hits(classifier, real, test, device)
    kinds = test.conditions[type_condition]

    def per_type(h: dict[str, np.ndarray]) -> dict[str, float]:
        return {vocabulary[type_condition][t]: float(h[type_condition][kinds == t].mean()) for t in np.unique(kinds)}

    spread, per_condition = diversity(sample, classifier, train, vocabulary, device, seed=seed)
    return Evaluation(generated["fid"], generated["kid"], generated["kid_std"], floor["fid"], floor["kid"],
                      {k: float(v.mean()) for k, v in hits.items()}, per_type(hits), len(test),
                      {k: float(v.mean()) for k, v in real_hits.items()}, per_type(real_hits),
                      spread, per_condition)


DIVERSITY_SETS = 12  # most common condition sets compared
DIVERSITY_IMAGES = 16  # images per set, generated and real


@torch.no_grad()
def diversity(sample: Sampler, classifier: Classifier, train: ImageSplit, vocabulary: dict[str, list[str]],
              device: torch.device, *, seed: int, sets: int = DIVERSITY_SETS,
              per_set: int = DIVERSITY_IMAGES) -> tuple[float, dict[str, float]]:
    """Within-condition variety: for the most common condition sets with at least `per_set` training
    photos, the mean pairwise distance of the classifier's features among `per_set` generated images
    (seeds seed..) over the same among `per_set` real photos of the set. Overall: the ratio of the
    summed means. NaN where no set has enough photos."""
    names = sorted(train.conditions)
    keys = np.stack([train.conditions[k] for k in names], axis=1)
    unique, counts = np.unique(keys, axis=0, return_counts=True)
    order = [i for i in np.argsort(-counts, kind="stable") if counts[i] >= per_set][:sets]
    rng = np.random.default_rng(seed)
    fake_total, real_total, per_condition = 0.0, 0.0, {}
    for i in order:
        cond = {k: int(v) for k, v in zip(names, unique[i], strict=True)}
        rows = np.flatnonzero((keys == unique[i]).all(axis=1))
        real = to_float(train.images[np.sort(rng.choice(rows, per_set, replace=False))])
        fake = sample(cond, [seed + j for j in range(per_set)]).cpu()
        spread = [float(torch.pdist(classifier.infer(x.to(device))[1].float()).mean()) for x in (fake, real)]
        fake_total, real_total = fake_total + spread[0], real_total + spread[1]
        label = " / ".join(vocabulary[k][v] for k, v in cond.items())
        per_condition[label] = spread[0] / spread[1] if spread[1] > 0 else float("nan")
    return (fake_total / real_total if real_total > 0 else float("nan")), per_condition


@torch.no_grad()
def _hits(classifier: Classifier, images: torch.Tensor, test: ImageSplit,
          device: torch.device) -> dict[str, np.ndarray]:
    """Per head, whether each image is classified as the held-out image of the same row is labelled."""
    predicted: dict[str, list[torch.Tensor]] = {k: [] for k in classifier.heads}
    for start in range(0, len(images), BATCH):
        for k, logits in classifier.eval().infer(images[start:start + BATCH].to(device))[0].items():
            predicted[k].append(logits.argmax(dim=-1).cpu())
    return {k: (torch.cat(v).numpy() == test.conditions[k]) for k, v in predicted.items()}

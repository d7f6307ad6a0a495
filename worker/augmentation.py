"""Rare-class augmentation as plain functions (issue 5): which classes are rare, how many synthetic
examples each should get, and the gate every candidate image passes before it is published.

The gate keeps a candidate only when
- the domain classifier assigns it to the target class with probability >= `min_confidence` (τ), and
- it is not a near-duplicate of a training image: its feature distance to the nearest training
  image is > `min_distance` (δ). δ defaults to a low quantile of how far real held-out items are
  from their nearest training item (see `FeatureIndex.distance_at`), so "near-duplicate" means
  "closer to a training image than almost any real new product is".
The `augment` job handler (worker/handlers/augment.py) and bench/augment_eval.py both use these.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from worker.evaluation import to_float
from worker.feature_index import FeatureIndex
from worker.models.classifier import Classifier, predict_with_features

LOW_CONFIDENCE, NEAR_DUPLICATE = "low_confidence", "near_duplicate"


@dataclass(frozen=True)
class RarePolicy:
    min_count: int  # a class with fewer training images is rare (0: off)
    median_share: float  # ... or one below this share of the median class size (0: off)
    max_per_class: int  # most synthetic images one run adds to a class

    def target(self, counts: dict[str, int]) -> int:
        """The size a rare class is topped up to: the larger of the two thresholds."""
        median = float(np.median([c for c in counts.values()])) if counts else 0.0
        return max(self.min_count, math.ceil(self.median_share * median))

    def rare(self, counts: dict[str, int]) -> dict[str, int]:
        """Rare classes -> how many synthetic examples to request, rarest first. Classes with no
        training images are left out: nothing was learned about them."""
        target = self.target(counts)
        wanted = {name: min(target - count, self.max_per_class) for name, count in counts.items()
                  if 0 < count < target}
        return dict(sorted(wanted.items(), key=lambda kv: (counts[kv[0]], kv[0])))


@dataclass(frozen=True)
class GateRule:
    min_confidence: float  # τ
    min_distance: float  # δ, in 1 - cosine of classifier features


@dataclass
class Judgement:
    """Per candidate: the probability of the target values, distance to the nearest training image,
    the nearest training item's id, and why it was rejected (None = kept)."""

    confidence: dict[str, np.ndarray]  # condition -> [N]
    distance: np.ndarray  # [N]
    nearest_id: list[str]
    reasons: list[str | None] = field(default_factory=list)

    @property
    def kept(self) -> np.ndarray:
        return np.array([r is None for r in self.reasons], dtype=bool)


@torch.no_grad()
def judge(images: np.ndarray, target: dict[str, np.ndarray], gate_on: str, classifier: Classifier,
          index: FeatureIndex, rule: GateRule, device: torch.device) -> Judgement:
    """Classify and place each candidate (uint8 [N, H, W, C]); `target` holds each image's requested
    value per condition, `gate_on` names the condition the confidence gate applies to."""
    # balanced: a candidate of a rare class is judged on how much it looks like the class, not on
    # how rare the class is in the catalog (a classifier trained on the catalog's mix rarely names it)
    heads, features = predict_with_features(classifier, to_float(images).to(device), balanced=True)
    confidence = {name: probs.gather(1, torch.as_tensor(target[name], device=device)[:, None])[:, 0].cpu().numpy()
                  for name, probs in heads.items() if name in target}
    distance, rows = index.nearest_train(features.cpu().numpy())
    reasons: list[str | None] = []
    for i in range(len(images)):
        if distance[i] <= rule.min_distance:  # a copy is a copy, however confident the classifier is
            reasons.append(NEAR_DUPLICATE)
        elif confidence[gate_on][i] < rule.min_confidence:
            reasons.append(LOW_CONFIDENCE)
        else:
            reasons.append(None)
    return Judgement(confidence, distance, [str(index.ids[r]) for r in rows], reasons)


def class_seed(dataset: str, date: str, class_name: str) -> int:
    """A stable base seed per dataset, date and class: a rerun draws the same candidates."""
    digest = hashlib.sha256(f"{dataset}|{date}|{class_name}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x3FFFFFFF


def slug(name: str) -> str:
    """A class name as a storage path segment."""
    out = "".join(c.lower() if c.isalnum() else "-" for c in name).strip("-")
    return "-".join(filter(None, out.split("-"))) or "class"


def unique_slugs(names: list[str]) -> dict[str, str]:
    """Each class's path segment; names that slug alike ("Jeans", "jeans", "jeans!") each get a
    short hash of the exact name, so no two classes share a record or a folder."""
    plain = {name: slug(name) for name in names}
    taken = Counter(plain.values())
    return {name: s if taken[s] == 1 else f"{s}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
            for name, s in plain.items()}


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: object) -> object:
    """A text cell a spreadsheet would run as a formula ("=HYPERLINK(...)", "+1-2", "@SUM") is
    prefixed with an apostrophe (OWASP's CSV-injection advice); numbers are left alone."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value

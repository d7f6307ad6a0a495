"""Nearest real items by the domain classifier's feature layer (seed 001's similar-item retrieval).

One index per dataset and classifier version: every real image's pooled features, centred and
L2-normalised, with its id, title and split. It is built once and kept in object storage under
`indexes/<dataset>/<classifier>-<version>.npz`; a worker process loads it once (LRU).

Similarity is the cosine of the feature vectors; distance is 1 - similarity. The index also
records how far each held-out real image is from its nearest training image, so a threshold for
"near-duplicate of a training image" can be set as a quantile of what real new items look like
instead of an absolute number that means something different for every classifier.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from worker.datasets.base import ImageDataset
from worker.evaluation import BATCH, to_float
from worker.models.classifier import Classifier, predict_with_features

QUANTILES = (0.001, 0.01, 0.05, 0.25, 0.5)
PRECISION = 1e-5  # distances below this are float32 rounding: the same image


@torch.no_grad()
def embed(model: Classifier, images: np.ndarray, device: torch.device) -> np.ndarray:
    """uint8 [N, H, W, C] -> the classifier's pooled features, float32 [N, D]."""
    out = [predict_with_features(model, to_float(images[s:s + BATCH]).to(device))[1].cpu()
           for s in range(0, len(images), BATCH)]
    return torch.cat(out).numpy() if out else np.zeros((0, model.config.feature_dim), np.float32)


@dataclass(frozen=True)
class Neighbour:
    id: str
    title: str
    similarity: float
    split: str

    def public(self) -> dict[str, object]:
        return {"id": self.id, "title": self.title, "similarity": round(self.similarity, 4), "split": self.split}


@dataclass(frozen=True)
class FeatureIndex:
    """Queries are the classifier's raw pooled features; the index centres them on the training
    images' mean and normalises them (post-ReLU features all point one way; centred, the cosine
    separates items far better)."""

    features: np.ndarray  # [N, D] float32, centred and unit length
    center: np.ndarray  # [D] mean raw feature vector of the training images
    ids: np.ndarray  # [N] str
    titles: np.ndarray  # [N] str
    splits: np.ndarray  # [N] "train" | "test"
    real_nn_distance: dict[str, float]  # quantile -> held-out real image's distance to its nearest train image

    def __len__(self) -> int:
        return len(self.ids)

    def unit(self, raw: np.ndarray) -> np.ndarray:
        return _centred_unit(raw, self.center)

    def search(self, raw: np.ndarray, k: int, *, train_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Raw features [M, D] -> (similarities [M, k], rows [M, k]), most similar first."""
        sims = self.unit(raw) @ self.features.T  # [M, N]
        if train_only:
            sims[:, self.splits != "train"] = -np.inf
        k = min(k, sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        rows = np.take_along_axis(top, order, axis=1)
        return np.take_along_axis(sims, rows, axis=1), rows

    def nearest(self, raw: np.ndarray, k: int = 5) -> list[list[Neighbour]]:
        sims, rows = self.search(raw, k)
        return [[Neighbour(str(self.ids[r]), str(self.titles[r]), float(s), str(self.splits[r]))
                 for s, r in zip(srow, rrow, strict=True)] for srow, rrow in zip(sims, rows, strict=True)]

    def nearest_train(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distance [M], row [M]): each query's nearest training image, distance = 1 - cosine."""
        sims, rows = self.search(raw, 1, train_only=True)
        return np.maximum(1.0 - sims[:, 0], 0.0), rows[:, 0]

    def distance_at(self, quantile: float) -> float:
        """The near-duplicate threshold for a quantile of real held-out items' nearest distances."""
        known = sorted((float(q), d) for q, d in self.real_nn_distance.items())
        value = next((d for q, d in known if quantile <= q), known[-1][1])
        return max(value, PRECISION)

    def to_npz(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, features=self.features, center=self.center,
                            ids=self.ids.astype(str), titles=self.titles.astype(str), splits=self.splits.astype(str),
                            real_nn_distance=json.dumps(self.real_nn_distance))
        return buffer.getvalue()

    @staticmethod
    def from_npz(data: bytes) -> FeatureIndex:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return FeatureIndex(npz["features"], npz["center"], npz["ids"], npz["titles"],
                                npz["splits"], json.loads(str(npz["real_nn_distance"])))


def build_index(model: Classifier, dataset: ImageDataset, titles: dict[str, str], device: torch.device,
                progress: Callable[[float, str], None] = lambda *_: None) -> FeatureIndex:
    """Every real image of the dataset. Items without catalog ids (Fashion-MNIST) are named by split
    and row; titles come from the catalog index, else the item's type."""
    type_condition = (dataset.roles or {}).get("type") or next(iter(dataset.vocabulary))
    raw, ids, names, splits = [], [], [], []
    for split_name, split in (("train", dataset.train), ("test", dataset.test)):
        progress(0.1 if split_name == "train" else 0.8, f"embedding {len(split)} {split_name} images")
        raw.append(embed(model, split.images, device))
        row_ids = split.ids if split.ids is not None else np.array([f"{split_name}-{i:06d}" for i in range(len(split))])
        kinds = dataset.vocabulary[type_condition]
        ids.extend(str(i) for i in row_ids)
        names.extend(titles.get(str(i)) or kinds[int(t)] for i, t in zip(row_ids, split.conditions[type_condition],
                                                                        strict=True))
        splits.extend([split_name] * len(split))
    center = (raw[0].mean(axis=0) if len(raw[0]) else np.zeros(model.config.feature_dim)).astype(np.float32)
    index = FeatureIndex(_centred_unit(np.concatenate(raw), center), center, np.array(ids), np.array(names),
                         np.array(splits), {})
    held_out = raw[1]
    if not (len(held_out) and len(raw[0])):
        return replace(index, real_nn_distance={str(q): 0.0 for q in QUANTILES})
    distances, _ = index.nearest_train(held_out)
    return replace(index, real_nn_distance={str(q): float(np.quantile(distances, q)) for q in QUANTILES})


def _centred_unit(raw: np.ndarray, center: np.ndarray) -> np.ndarray:
    centred = raw.astype(np.float32) - center
    return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)

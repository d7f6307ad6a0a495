"""In-memory image datasets as the training loops see them: uint8 pixels plus integer conditions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImageSplit:
    images: np.ndarray  # [N, H, W, C] uint8
    conditions: dict[str, np.ndarray]  # name -> [N] int64 index into the vocabulary

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def head(self, n: int | None) -> ImageSplit:
        if n is None or n >= len(self):
            return self
        return ImageSplit(self.images[:n], {k: v[:n] for k, v in self.conditions.items()})

    def stratified_head(self, n: int | None, condition: str, seed: int = 0) -> ImageSplit:
        """A subset of n examples with every value of `condition` represented (for tiny runs)."""
        if n is None or n >= len(self):
            return self
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(self))
        labels = self.conditions[condition][order]
        # interleave classes so any prefix covers all of them
        ranks = np.empty(len(order), dtype=np.int64)
        for value in np.unique(labels):
            idx = np.flatnonzero(labels == value)
            ranks[idx] = np.arange(len(idx))
        chosen = np.sort(order[np.argsort(ranks, kind="stable")[:n]])
        return ImageSplit(self.images[chosen], {k: v[chosen] for k, v in self.conditions.items()})


@dataclass(frozen=True)
class ImageDataset:
    name: str
    train: ImageSplit
    test: ImageSplit
    vocabulary: dict[str, list[str]]  # condition name -> value names

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[3])

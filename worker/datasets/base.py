"""In-memory image datasets as the training loops see them: uint8 pixels plus integer conditions."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImageSplit:
    images: np.ndarray  # [N, H, W, C] uint8
    conditions: dict[str, np.ndarray]  # name -> [N] int64 index into the vocabulary
    ids: np.ndarray | None = None  # [N] catalog item ids (str), when the source has them

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def take(self, index: np.ndarray | slice) -> ImageSplit:
        return ImageSplit(self.images[index], {k: v[index] for k, v in self.conditions.items()},
                          None if self.ids is None else self.ids[index])

    def concat(self, other: ImageSplit) -> ImageSplit:
        """Both splits' examples (the conditions both have); ids only when both have them."""
        ids = None if self.ids is None or other.ids is None else np.concatenate([self.ids, other.ids])
        return ImageSplit(np.concatenate([self.images, other.images]),
                          {k: np.concatenate([v, other.conditions[k]]) for k, v in self.conditions.items()
                           if k in other.conditions}, ids)

    def head(self, n: int | None) -> ImageSplit:
        if n is None or n >= len(self):
            return self
        return self.take(slice(0, n))

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
        return self.take(chosen)

    def to_npz(self) -> bytes:
        buffer = io.BytesIO()
        extra = {} if self.ids is None else {"ids": self.ids.astype(str)}
        np.savez_compressed(buffer, images=self.images, **extra,
                            **{f"cond_{k}": v for k, v in self.conditions.items()})
        return buffer.getvalue()

    @staticmethod
    def from_npz(data: bytes) -> ImageSplit:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return ImageSplit(npz["images"], {k[5:]: npz[k] for k in npz.files if k.startswith("cond_")},
                              npz["ids"] if "ids" in npz.files else None)


@dataclass(frozen=True)
class ImageDataset:
    name: str
    train: ImageSplit
    test: ImageSplit
    vocabulary: dict[str, list[str]]  # condition name -> value names
    roles: dict[str, str] | None = None  # "type"/"colour" -> condition name, for the prompt interpreter

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[3])

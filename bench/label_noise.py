"""How consistent are the catalog's own labels? For every demo-catalog photo, its nearest other photo
by pixels (the letterbox cropped, 16 px high, RMS over pixels and channels), then, per band of that
distance, how often the two photos carry the same product type and the same colour name.

Two photos that look the same to within a few levels of 255 show a product of the same colour, so
where their colour names differ the catalog names one look two ways: no classifier reading those
pixels can be right about both. Prints the agreement per band and the most frequent disagreeing
pairs of names.

    python -m bench.label_noise [--size 16]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from bench.classifier import load_catalog
from worker.models.classifier import letterbox_width

BANDS = (0.01, 0.02, 0.04, 0.08)  # RMS distance in [0, 1] units: 0.02 is about 5 levels of 255


def thumbnails(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, D]: the letterbox cropped, area-downsampled to `size` high."""
    n, h, w, _ = images.shape
    kept = max(1, round(w * letterbox_width(images)))
    left = (w - kept) // 2
    out = []
    for start in range(0, n, 2048):
        x = torch.from_numpy(images[start:start + 2048, :, left:left + kept]).permute(0, 3, 1, 2).float() / 255
        out.append(F.interpolate(x, size=(size, max(1, round(size * kept / h))), mode="area").flatten(1))
    return torch.cat(out)


def nearest(x: torch.Tensor, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest other row: (index, RMS distance)."""
    norms = (x * x).sum(dim=1)
    index, distance = [], []
    for start in range(0, len(x), chunk):
        block = x[start:start + chunk]
        d2 = norms[start:start + chunk, None] + norms[None] - 2 * block @ x.T
        d2[torch.arange(len(block)), torch.arange(start, start + len(block))] = float("inf")
        best = d2.min(dim=1)
        index.append(best.indices.numpy())
        distance.append(np.sqrt(np.maximum(best.values.numpy(), 0) / x.shape[1]))
    return np.concatenate(index), np.concatenate(distance)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=Path(os.environ.get("ATELIER_DATASETS", "../shared/datasets")))
    parser.add_argument("--size", type=int, default=16, help="thumbnail height in pixels")
    args = parser.parse_args()
    started = time.perf_counter()
    dataset = load_catalog(args.datasets)
    images = np.concatenate([dataset.train.images, dataset.test.images])
    labels = {head: np.concatenate([dataset.train.conditions[head], dataset.test.conditions[head]])
              for head in ("articleType", "baseColour")}
    names = dataset.vocabulary
    index, distance = nearest(thumbnails(images, args.size))
    print(f"{len(images)} photos, nearest neighbours in {time.perf_counter() - started:.0f} s\n")
    print("| nearest photo within RMS | photos | same type | same colour name |")
    print("|---|---|---|---|")
    for band in BANDS:
        near = distance < band
        same = {head: (v[near] == v[index[near]]).mean() if near.any() else float("nan") for head, v in labels.items()}
        print(f"| {band:g} (~{band * 255:.0f} of 255) | {int(near.sum()):,} | {same['articleType']:.1%} | "
              f"{same['baseColour']:.1%} |")
    near = distance < BANDS[1]
    colour = labels["baseColour"]
    pairs = Counter(tuple(sorted((names["baseColour"][a], names["baseColour"][b])))
                    for a, b in zip(colour[near], colour[index[near]], strict=True) if a != b)
    print(f"\nColour names that differ between photos within {BANDS[1]:g} (each photo counted once):")
    for (a, b), count in pairs.most_common(12):
        print(f"  {a} / {b}: {count}")


if __name__ == "__main__":
    main()

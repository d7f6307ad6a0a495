"""Datasets in object storage under datasets/<name>/: train.npz, test.npz and meta.json, the
meta written last so its presence means the import is complete. Imported on first use."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np

from shared.settings import Settings
from shared.storage import PutItem, Storage
from worker.datasets import fashion_mnist
from worker.datasets.base import ImageDataset

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]


def prefix(name: str) -> str:
    return f"datasets/{name}/"


def import_dataset(name: str, storage: Storage, settings: Settings, progress: Progress) -> dict:
    """Read the demo data from ATELIER_DATASETS and write it to object storage. Idempotent."""
    if name != fashion_mnist.NAME:
        raise ValueError(f"unknown dataset {name}")
    progress(0.0, f"importing dataset {name} from local files")
    folder = fashion_mnist.locate(settings.datasets_dir, allow_download=settings.allow_dataset_download,
                                  cache_dir=settings.var_dir / "cache")
    dataset = fashion_mnist.load_folder(folder)
    progress(0.5, f"uploading dataset {name}")
    storage.put_many([
        PutItem(prefix(name) + "train.npz", fashion_mnist.to_npz(dataset.train)),
        PutItem(prefix(name) + "test.npz", fashion_mnist.to_npz(dataset.test)),
    ])
    meta = {
        "name": name, "imported_at": datetime.now(UTC).isoformat(), "source": str(folder),
        "vocabulary": dataset.vocabulary, "image_size": dataset.image_size, "channels": dataset.channels,
        "counts": {split: {dataset.vocabulary["class"][i]: int(c) for i, c in
                           enumerate(np.bincount(getattr(dataset, split).conditions["class"],
                                                 minlength=len(dataset.vocabulary["class"])))}
                   for split in ("train", "test")},
        "source_sha256": fashion_mnist.FILES,
    }
    storage.put_json(prefix(name) + "meta.json", meta)
    progress(1.0, f"dataset {name} imported")
    return meta


def load_dataset(name: str, storage: Storage, settings: Settings, progress: Progress) -> ImageDataset:
    """The dataset from object storage, importing it first when it is not there yet."""
    meta_key = prefix(name) + "meta.json"
    if not storage.exists(meta_key):
        import_dataset(name, storage, settings, progress)
    meta = storage.get_json(meta_key)
    progress(1.0, f"loading dataset {name}")
    return ImageDataset(
        name=name,
        train=fashion_mnist.from_npz(storage.get(prefix(name) + "train.npz")),
        test=fashion_mnist.from_npz(storage.get(prefix(name) + "test.npz")),
        vocabulary=meta["vocabulary"],
    )

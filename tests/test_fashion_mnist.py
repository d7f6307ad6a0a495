"""Reading Fashion-MNIST from ATELIER_DATASETS, and clear errors when it is not there."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from shared.errors import DatasetMissing
from worker.datasets import fashion_mnist
from worker.datasets.base import ImageSplit


def test_read_idx_parses_the_header() -> None:
    data = struct.pack(">HBB", 0, 8, 3) + struct.pack(">3I", 2, 2, 3) + bytes(range(12))
    array = fashion_mnist.read_idx(data)
    assert array.shape == (2, 2, 3) and array[1, 1, 2] == 11
    with pytest.raises(ValueError):
        fashion_mnist.read_idx(data[:-1])


def test_missing_dataset_names_the_folder_and_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissing) as raised:
        fashion_mnist.locate(tmp_path, allow_download=False, cache_dir=tmp_path / "cache")
    message = raised.value.message
    assert str(tmp_path / "fashion-mnist") in message and "train-images-idx3-ubyte.gz" in message
    assert raised.value.code == "dataset_missing"
    with pytest.raises(DatasetMissing, match="ATELIER_DATASETS is not set"):
        fashion_mnist.locate(None, allow_download=False, cache_dir=tmp_path)


def test_corrupt_file_fails_its_checksum(tmp_path: Path) -> None:
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for name in fashion_mnist.FILES:
        (folder / name).write_bytes(gzip.compress(b"not the real thing"))
    with pytest.raises(DatasetMissing, match="sha256"):
        fashion_mnist.locate(tmp_path, allow_download=False, cache_dir=tmp_path)


def test_real_files_load(fashion_mnist_available: Path) -> None:
    folder = fashion_mnist.locate(fashion_mnist_available, allow_download=False, cache_dir=Path("/nonexistent"))
    data = fashion_mnist.load_folder(folder)
    assert data.train.images.shape == (60000, 28, 28, 1) and data.test.images.shape == (10000, 28, 28, 1)
    assert np.bincount(data.train.conditions["class"]).tolist() == [6000] * 10
    assert data.vocabulary["class"][9] == "Ankle boot"
    round_trip = ImageSplit.from_npz(data.test.head(10).to_npz())
    assert np.array_equal(round_trip.images, data.test.images[:10])

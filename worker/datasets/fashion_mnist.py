"""Fashion-MNIST: read the four official idx .gz files from ATELIER_DATASETS/fashion-mnist (or
download them, checksum-verified, where the network allows), and store them in object storage."""

from __future__ import annotations

import gzip
import hashlib
import logging
import struct
import urllib.request
from pathlib import Path

import numpy as np

from shared.errors import DatasetMissing
from worker.datasets.base import ImageDataset, ImageSplit

log = logging.getLogger(__name__)

NAME = "fashion-mnist"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]
# sha256 of the official files (identical to ../shared/datasets/fashion-mnist, see its SOURCE.md)
FILES = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
DOWNLOAD_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


def read_idx(data: bytes) -> np.ndarray:
    """Parse an idx file (ubyte only): magic 0x0000 08 <ndim>, then ndim big-endian sizes."""
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError("not an unsigned-byte idx file")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"idx payload has {array.size} bytes, header says {shape}")
    return array.reshape(shape)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(folder: Path) -> None:
    for name, expected in FILES.items():
        actual = sha256_of(folder / name)
        if actual != expected:
            raise DatasetMissing(f"{folder / name} has sha256 {actual}, expected {expected}: the file is "
                                 "corrupt or not the official Fashion-MNIST")


def locate(datasets_dir: Path | None, *, allow_download: bool, cache_dir: Path) -> Path:
    """The folder holding the four files: ATELIER_DATASETS/fashion-mnist, else a verified download."""
    expected = ", ".join(FILES)
    if datasets_dir is not None:
        folder = Path(datasets_dir) / NAME
        if all((folder / name).is_file() for name in FILES):
            verify(folder)
            return folder
    if allow_download:
        try:
            return download(cache_dir / NAME)
        except OSError as exc:
            log.warning("fashion-mnist download failed: %s", exc)
    where = (str(Path(datasets_dir) / NAME) if datasets_dir
             else "ATELIER_DATASETS/fashion-mnist (ATELIER_DATASETS is not set)")
    raise DatasetMissing(f"Fashion-MNIST not found: expected {expected} in {where}, and it could not be "
                         "downloaded", details={"folder": where, "files": list(FILES)})


def download(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, expected in FILES.items():
        target = folder / name
        if target.is_file() and sha256_of(target) == expected:
            continue
        partial = target.with_suffix(".part")
        with urllib.request.urlopen(DOWNLOAD_BASE + name, timeout=30) as response, partial.open("wb") as out:
            out.write(response.read())
        if sha256_of(partial) != expected:
            partial.unlink()
            raise OSError(f"downloaded {name} failed its checksum")
        partial.rename(target)
    return folder


def load_folder(folder: Path) -> ImageDataset:
    def read(name: str) -> np.ndarray:
        return read_idx(gzip.decompress((folder / name).read_bytes()))

    def split(prefix: str) -> ImageSplit:
        images = read(f"{prefix}-images-idx3-ubyte.gz")[..., None]  # [N, 28, 28, 1]
        labels = read(f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        return ImageSplit(images, {"class": labels})

    return ImageDataset(NAME, split("train"), split("t10k"), {"class": CLASSES}, roles={"type": "class"})

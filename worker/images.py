"""Tensors to PNG bytes and contact sheets (Pillow). PNG encoding is deterministic: same pixels,
same bytes. zlib level 1: 4x faster than Pillow's default for ~40 % larger files, which at 64x64
(~3 KB) is the right trade for a latency-bound generate job."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from shared.thread_pools import thread_pool


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] floats in [0, 1] -> [N, H, W, C] uint8."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image[..., 0], mode="L") if image.shape[-1] == 1 else Image.fromarray(image, "RGB")


def png_bytes(image: np.ndarray) -> bytes:
    """One [H, W, C] uint8 image as PNG."""
    buffer = io.BytesIO()
    _pil(image).save(buffer, format="PNG", optimize=False, compress_level=1)
    return buffer.getvalue()


def grid(images: np.ndarray, columns: int, *, pad: int = 2, scale: int = 1, background: int = 255) -> np.ndarray:
    """Tile [N, H, W, C] uint8 images into one [H', W', C] image, row-major, with padding."""
    n, h, w, c = images.shape
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    sheet = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), background, dtype=np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        sheet[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = image
    if scale > 1:
        sheet = sheet.repeat(scale, axis=0).repeat(scale, axis=1)
    return sheet


ARCHIVE_DATE = (2020, 1, 1, 0, 0, 0)  # a fixed member date: the same images give the same archive bytes
_LOCAL_HEADER = 30  # bytes of a zip local file header before its name and extra field


@dataclass(frozen=True)
class ArchivedImage:
    name: str
    offset: int  # of the PNG's bytes inside the archive: one ranged GET serves the image alone
    length: int


def png_archive(images: np.ndarray, *, encoders: int = 4) -> tuple[bytes, list[ArchivedImage]]:
    """[N, H, W, C] uint8 -> an uncompressed zip of 000.png, 001.png, ... and where each PNG's bytes
    lie in it. One object instead of N: each put costs milliseconds of CPU on both sides (measured:
    docs/BENCHMARKS.md, "Generate latency"). zlib releases the GIL, so encoding runs in threads."""
    pngs = list(thread_pool("png", encoders).map(png_bytes, images)) if encoders > 1 else [png_bytes(i) for i in images]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i, data in enumerate(pngs):
            archive.writestr(zipfile.ZipInfo(f"{i:03d}.png", date_time=ARCHIVE_DATE), data)
        placed = [ArchivedImage(info.filename, info.header_offset + _LOCAL_HEADER + len(info.filename.encode())
                                + len(info.extra), info.file_size) for info in archive.infolist()]
    return buffer.getvalue(), placed

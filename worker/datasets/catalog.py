"""Product catalogs in the Fashion Product Images shape: a CSV with one row per product (id, type,
colour, title, ...) and a zip or folder of `<id>.jpg` images.

Images become 64x64 RGB, letterboxed on white (the demo originals are 60 wide x 80 tall). Each class
gets a deterministic held-out split chosen by a hash of the item id, so re-imports and other
machines agree. Bad rows are counted by reason and the import goes on; classes with fewer images
than the training minimum are listed in the report rather than silently dropped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from shared.errors import DatasetMissing, ValidationFailed
from shared.query_images import MAX_IMAGE_PIXELS
from worker.datasets.base import ImageDataset, ImageSplit

log = logging.getLogger(__name__)

DEMO_FOLDER = "fashion-product-images-small"
TYPE, COLOUR = "articleType", "baseColour"  # condition names, whatever the source columns are called
MISSING_VALUES = frozenset({"", "NA", "N/A", "nan", "NaN", "null", "None"})
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # one product photo; anything larger is refused, not decoded
MAX_ZIP_ENTRIES = 500_000  # the demo catalog has 44k; the central directory is read into memory
# Stored and deflate only: zipfile hands a bzip2 or LZMA member's whole output to the reader at once,
# so a few KB that claim 100 bytes can decompress to gigabytes before any size check.
ZIP_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")  # decoded as these or not at all, whatever else Pillow knows
CHUNK = 64 * 1024

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Columns:
    """Which CSV columns hold the item id, product type, colour and title (and an optional group)."""

    id: str = "id"
    type: str = "articleType"
    colour: str = "baseColour"
    title: str = "productDisplayName"
    group: str | None = "masterCategory"


@dataclass(frozen=True)
class ImportOptions:
    columns: Columns = field(default_factory=Columns)
    groups: tuple[str, ...] | None = ("Apparel", "Footwear", "Accessories")  # None: every row
    classes: tuple[str, ...] | None = None  # only these product types
    max_per_class: int | None = None  # a small slice (tests, quick trials)
    min_class_count: int = 8  # fewer images than this: listed, not trained on
    test_fraction: float = 0.1
    image_size: int = 64


class ImageSource:
    """`<id>.<ext>` images from a zip (any folder inside it) or a directory tree, looked up by id."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._index: dict[str, str] = {}
        if path.is_file():
            try:
                self._zip = zipfile.ZipFile(path)
            except zipfile.BadZipFile as exc:
                raise ValidationFailed(f"{path.name} is not a zip file", code="invalid_archive",
                                       field="images") from exc
            entries = self._zip.infolist()
            if len(entries) > MAX_ZIP_ENTRIES:
                self._zip.close()
                raise ValidationFailed(f"{path.name} has {len(entries)} entries; at most {MAX_ZIP_ENTRIES} are read",
                                       code="too_many_entries", field="images")
            names = [i.filename for i in entries if not i.is_dir()]
        elif path.is_dir():
            names = [str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()]
        else:
            raise DatasetMissing(f"no images at {path}", details={"path": str(path)})
        for name in names:
            pure = PurePosixPath(name)
            if pure.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"} and not pure.name.startswith("."):
                self._index.setdefault(pure.stem, name)

    def __len__(self) -> int:
        return len(self._index)

    def read(self, item_id: str) -> bytes | None:
        name = self._index.get(item_id)
        if name is None:
            return None
        if self._zip is not None:
            return read_member(self._zip, self._zip.getinfo(name))
        target = self.path / name
        if target.stat().st_size > MAX_IMAGE_BYTES:
            raise ValueError("image too large")
        return target.read_bytes()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int = MAX_IMAGE_BYTES) -> bytes:
    """A member's bytes, never more than its declared size or `limit` in memory: a member whose
    compression is not stored/deflate, that declares more than the limit or that yields more than
    it declares is refused (ValueError) after reading at most one chunk past the declaration."""
    if info.compress_type not in ZIP_METHODS:
        raise ValueError(f"compression method {info.compress_type} is not read")
    if info.file_size > limit:
        raise ValueError("image too large")
    out = bytearray()
    with archive.open(info) as member:
        while chunk := member.read(min(CHUNK, info.file_size + 1 - len(out))):
            out += chunk
            if len(out) > info.file_size:
                raise ValueError("the member holds more than it declares")
    return bytes(out)


def letterbox(data: bytes, size: int) -> np.ndarray:
    """Any photo -> [size, size, 3] uint8, scaled to fit and centred on white."""
    with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise ValueError("image has too many pixels")
        return letterbox_image(img, size)


def letterbox_image(img: Image.Image, size: int, channels: int = 3) -> np.ndarray:
    """A decoded photo -> [size, size, channels] uint8, scaled to fit and centred on white (RGB), or
    inverted onto black for one-channel datasets (Fashion-MNIST draws light garments on black)."""
    img = img.convert("RGB")
    scale = size / max(img.width, img.height)
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(img, ((size - w) // 2, (size - h) // 2))
    if channels == 1:
        return (255 - np.asarray(canvas.convert("L"), dtype=np.uint8))[..., None]
    return np.asarray(canvas, dtype=np.uint8)


def split_rank(item_id: str) -> float:
    """A stable pseudo-random rank in [0, 1) for an id: the split does not depend on row order."""
    digest = hashlib.sha256(f"atelier-split:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def read_rows(csv_path: Path, columns: Columns) -> Iterator[dict[str, str]]:
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = set(reader.fieldnames or [])
        wanted = {"id": columns.id, "type": columns.type, "colour": columns.colour, "title": columns.title}
        if columns.group:
            wanted["group"] = columns.group
        missing = {role: name for role, name in wanted.items() if name not in header}
        if missing:
            role, name = next(iter(missing.items()))
            raise ValidationFailed(
                f"the CSV has no column {name!r} (for the item {role}); its columns are {sorted(header)}",
                code="unknown_column", field=f"columns.{role}", details={"columns": sorted(header)})
        yield from reader


@dataclass
class ImportReport:
    rows: int = 0
    imported: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> rows
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # reason -> ids

    def skip(self, reason: str, item_id: str) -> None:
        self.skipped[reason] += 1
        if len(self.examples[reason]) < 10:
            self.examples[reason].append(item_id)


@dataclass(frozen=True)
class Item:
    id: str
    type: str
    colour: str
    title: str


def select_items(rows: Iterator[dict[str, str]], options: ImportOptions, report: ImportReport) -> list[Item]:
    cols = options.columns
    wanted_classes = set(options.classes) if options.classes else None
    items: list[Item] = []
    seen: set[str] = set()
    per_class: Counter = Counter()
    for row in rows:
        report.rows += 1
        item_id = (row.get(cols.id) or "").strip()
        if not item_id:
            report.skip("missing_id", f"row {report.rows}")
            continue
        if item_id in seen:
            report.skip("duplicate_id", item_id)
            continue
        seen.add(item_id)
        if options.groups and cols.group and row.get(cols.group) not in options.groups:
            report.skip("outside_scope", item_id)
            continue
        kind, colour = (row.get(cols.type) or "").strip(), (row.get(cols.colour) or "").strip()
        if kind in MISSING_VALUES or colour in MISSING_VALUES:
            report.skip("missing_type_or_colour", item_id)
            continue
        if wanted_classes is not None and kind not in wanted_classes:
            report.skip("class_not_requested", item_id)
            continue
        if options.max_per_class is not None and per_class[kind] >= options.max_per_class:
            report.skip("over_max_per_class", item_id)
            continue
        per_class[kind] += 1
        items.append(Item(item_id, kind, colour, (row.get(cols.title) or "").strip()))
    return items


def import_catalog(name: str, csv_path: Path, images: ImageSource, options: ImportOptions,
                   progress: Progress) -> tuple[ImageDataset, dict]:
    """Read, letterbox and split a catalog. Returns the dataset and its report (for meta.json)."""
    report = ImportReport()
    items = select_items(read_rows(csv_path, options.columns), options, report)
    progress(0.05, f"{len(items)} rows selected from {report.rows}")

    pixels: list[np.ndarray] = []
    kept: list[Item] = []
    for i, item in enumerate(items):
        try:
            data = images.read(item.id)
            if data is None:
                report.skip("missing_image", item.id)
                continue
            pixels.append(letterbox(data, options.image_size))
            kept.append(item)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, zipfile.BadZipFile):
            report.skip("unreadable_image", item.id)
        if i % 500 == 0:
            progress(0.05 + 0.85 * i / max(len(items), 1), f"decoded {i}/{len(items)} images")

    counts = Counter(item.type for item in kept)
    below = {kind: n for kind, n in counts.items() if n < options.min_class_count}
    trainable = [i for i, item in enumerate(kept) if item.type not in below]
    if not trainable:
        raise ValidationFailed("no class has enough images to train on "
                               f"(minimum {options.min_class_count}); counts: {dict(counts)}",
                               code="dataset_too_small", field="min_class_count")
    types = sorted({kept[i].type for i in trainable})
    colours = sorted({kept[i].colour for i in trainable})
    type_index = {v: k for k, v in enumerate(types)}
    colour_index = {v: k for k, v in enumerate(colours)}

    by_class: dict[str, list[int]] = defaultdict(list)
    for i in trainable:
        by_class[kept[i].type].append(i)
    test_rows: set[int] = set()
    for rows in by_class.values():
        ranked = sorted(rows, key=lambda r: split_rank(kept[r].id))
        n_test = max(1, int(len(rows) * options.test_fraction))  # every class is evaluated
        test_rows.update(ranked[:n_test])

    def split(rows: list[int]) -> ImageSplit:
        return ImageSplit(
            np.stack([pixels[r] for r in rows]) if rows else np.zeros((0, options.image_size,
                                                                        options.image_size, 3), np.uint8),
            {TYPE: np.array([type_index[kept[r].type] for r in rows], dtype=np.int64),
             COLOUR: np.array([colour_index[kept[r].colour] for r in rows], dtype=np.int64)},
            np.array([kept[r].id for r in rows], dtype=str),
        )

    train_rows = [r for r in trainable if r not in test_rows]
    test_list = [r for r in trainable if r in test_rows]
    dataset = ImageDataset(name, split(train_rows), split(test_list), {TYPE: types, COLOUR: colours},
                           roles={"type": TYPE, "colour": COLOUR})
    index = [{"id": kept[r].id, "type": kept[r].type, "colour": kept[r].colour, "title": kept[r].title,
              "split": "test" if r in test_rows else "train"} for r in trainable]
    meta = {
        "rows": report.rows, "imported": len(trainable), "train": len(train_rows), "test": len(test_list),
        "skipped": dict(report.skipped), "skipped_examples": dict(report.examples),
        "below_minimum": {"min_class_count": options.min_class_count,
                          "classes": dict(sorted(below.items())),
                          "items": sum(below.values())},
        "index": index,
    }
    progress(0.95, f"imported {len(trainable)} images in {len(types)} classes")
    return dataset, meta

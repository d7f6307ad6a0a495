"""Datasets in object storage under datasets/<name>/: train.npz, test.npz, index.json (catalogs)
and meta.json, the meta written last so its presence means the import is complete.

`fashion-mnist` and `catalog` import themselves from ATELIER_DATASETS on first use; any other name
comes from an `import_dataset` job (an upload through POST /v1/datasets or an object-storage prefix).
"""

from __future__ import annotations

import itertools
import json
import logging
import tempfile
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from shared.errors import DatasetMissing, JobFailure, ValidationFailed
from shared.schemas import ImportDatasetInput
from shared.settings import Settings
from shared.storage import PutItem, Storage
from worker.datasets import catalog, descriptions, fashion_mnist
from worker.datasets.base import ImageDataset, ImageSplit

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
MAX_SOURCE_OBJECTS = 200_000


def prefix(name: str) -> str:
    return f"datasets/{name}/"


def meta_key(name: str) -> str:
    return prefix(name) + "meta.json"


def default_import(name: str) -> ImportDatasetInput:
    """What importing a built-in dataset on first use means."""
    if name == fashion_mnist.NAME:
        return ImportDatasetInput(name=name, format="fashion-mnist")
    if name == "catalog":
        return ImportDatasetInput(name=name, format="catalog")
    if name == "descriptions":
        return ImportDatasetInput(name=name, format="descriptions")
    raise DatasetMissing(f"dataset {name!r} has not been imported; import it with POST /v1/datasets or an "
                         "import_dataset job", code="dataset_not_found", details={"dataset": name})


def counts_of(dataset: ImageDataset) -> dict[str, dict[str, int]]:
    """Training images per value of each condition."""
    return {cond: {dataset.vocabulary[cond][i]: int(c) for i, c in enumerate(
        np.bincount(dataset.train.conditions[cond], minlength=len(dataset.vocabulary[cond])))}
        for cond in dataset.vocabulary}


def _catalog_from_demo(spec: ImportDatasetInput, settings: Settings) -> tuple[Path, Path, tuple[str, ...] | None]:
    folder = Path(settings.datasets_dir or "") / catalog.DEMO_FOLDER
    csv_path, zip_path = folder / "styles.csv", folder / "images.zip"
    if settings.datasets_dir is None or not csv_path.is_file() or not zip_path.is_file():
        raise DatasetMissing(f"the demo catalog needs styles.csv and images.zip in {folder} "
                             "(set ATELIER_DATASETS)", details={"folder": str(folder),
                                                               "files": ["styles.csv", "images.zip"]})
    groups = tuple(spec.groups) if spec.groups is not None else catalog.ImportOptions.groups
    return csv_path, zip_path, groups


def _csv_from_prefix(spec: ImportDatasetInput, storage: Storage, workdir: Path,
                     keys: list[str] | None = None) -> Path:
    """Download the one CSV under an object-storage prefix."""
    keys = keys if keys is not None else list(itertools.islice(storage.list(spec.source_prefix), MAX_SOURCE_OBJECTS))
    csvs = [k for k in keys if k.lower().endswith(".csv")]
    if len(csvs) != 1:
        raise ValidationFailed(f"{spec.source_prefix} must hold exactly one .csv, found {len(csvs)}",
                               code="invalid_source", field="source_prefix")
    csv_path = workdir / "source.csv"
    with csv_path.open("wb") as out:  # streamed: an upload is never whole in the worker's memory
        storage.copy_to(csvs[0], out)
    return csv_path


def _catalog_from_prefix(spec: ImportDatasetInput, storage: Storage, workdir: Path) -> tuple[Path, Path]:
    """Download one CSV and a zip (or loose images) from an object-storage prefix."""
    keys = list(itertools.islice(storage.list(spec.source_prefix), MAX_SOURCE_OBJECTS))
    csv_path = _csv_from_prefix(spec, storage, workdir, keys)
    zips = [k for k in keys if k.lower().endswith(".zip")]
    if zips:
        images = workdir / "images.zip"
        with images.open("wb") as out:
            storage.copy_to(zips[0], out)
        return csv_path, images
    images = workdir / "images"
    for key in keys:
        if key.lower().rsplit(".", 1)[-1] in {"jpg", "jpeg", "png", "webp"}:
            target = images / Path(key).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(storage.get(key))
    return csv_path, images


def _import_catalog(spec: ImportDatasetInput, storage: Storage, settings: Settings,
                    progress: Progress) -> tuple[ImageDataset, dict]:
    with tempfile.TemporaryDirectory(prefix="atelier-import-") as tmp:
        if spec.source_prefix:
            csv_path, images_path = _catalog_from_prefix(spec, storage, Path(tmp))
            groups = tuple(spec.groups) if spec.groups else None
            source = spec.source_prefix
        else:
            csv_path, images_path, groups = _catalog_from_demo(spec, settings)
            source = str(csv_path.parent)
        # The demo catalog's column names by default; an upload has no group column unless named.
        default = catalog.Columns(group=None) if spec.source_prefix else catalog.Columns()
        columns = catalog.Columns(**spec.columns.model_dump()) if spec.columns else default
        if groups and not columns.group:
            raise ValidationFailed("`groups` filters on a column; name it in columns.group",
                                   field="columns.group")
        options = catalog.ImportOptions(
            columns=columns, groups=groups, classes=tuple(spec.classes) if spec.classes else None,
            max_per_class=spec.max_per_class, min_class_count=spec.min_class_count,
            test_fraction=spec.test_fraction)
        images = catalog.ImageSource(images_path)
        try:
            dataset, report = catalog.import_catalog(spec.name, csv_path, images, options, progress)
        finally:
            images.close()
    report["source"] = source
    report["columns"] = dict(vars(columns))
    return dataset, report


def _import_descriptions(spec: ImportDatasetInput, storage: Storage, settings: Settings,
                         progress: Progress) -> dict:
    """Cleaned (name -> description) pairs as train.jsonl / test.jsonl, meta.json last."""
    columns = descriptions.DescriptionColumns(**spec.text_columns.model_dump()) if spec.text_columns \
        else descriptions.DescriptionColumns()
    with tempfile.TemporaryDirectory(prefix="atelier-import-") as tmp:
        if spec.source_prefix:
            csv_path, source = _csv_from_prefix(spec, storage, Path(tmp)), spec.source_prefix
        else:
            csv_path = Path(settings.datasets_dir or "") / descriptions.DEMO_FILE
            if settings.datasets_dir is None or not csv_path.is_file():
                raise DatasetMissing(f"the demo descriptions need {csv_path} (set ATELIER_DATASETS)",
                                     details={"file": str(csv_path)})
            source = str(csv_path)
        rows = descriptions.read_csv(csv_path, columns)
    progress(0.3, f"cleaning {len(rows)} rows")
    pairs, report = descriptions.clean_pairs(rows, columns, test_fraction=spec.test_fraction)
    progress(0.8, f"uploading {len(pairs)} pairs")
    by_split = {split: "\n".join(json.dumps(vars(p)) for p in pairs if p.split == split).encode()
                for split in ("train", "test")}
    storage.put_many([PutItem(prefix(spec.name) + f"{split}.jsonl", body, "application/x-ndjson")
                      for split, body in by_split.items()])
    meta = {"name": spec.name, "format": "descriptions", "imported_at": datetime.now(UTC).isoformat(),
            "source": source, "sizes": {split: sum(p.split == split for p in pairs) for split in ("train", "test")},
            "colours": dict(sorted(Counter(p.colour or "unknown" for p in pairs).items())),
            "rows": report.rows, "skipped": dict(report.skipped), "cleaning": report.as_dict(),
            "import": spec.model_dump(mode="json")}
    storage.put_json(meta_key(spec.name), meta)  # last: the dataset is complete
    progress(1.0, f"dataset {spec.name} imported")
    return meta


def import_dataset(spec: ImportDatasetInput, storage: Storage, settings: Settings, progress: Progress) -> dict:
    """Build the dataset from its source and write it to object storage. Idempotent."""
    progress(0.0, f"importing dataset {spec.name}")
    if spec.format == "descriptions":
        return _import_descriptions(spec, storage, settings, progress)
    if spec.format == "fashion-mnist":
        folder = fashion_mnist.locate(settings.datasets_dir, allow_download=settings.allow_dataset_download,
                                      cache_dir=settings.var_dir / "cache")
        dataset, report = fashion_mnist.load_folder(folder), {"source": str(folder),
                                                               "source_sha256": fashion_mnist.FILES}
        dataset = ImageDataset(spec.name, dataset.train, dataset.test, dataset.vocabulary, dataset.roles)
    else:
        dataset, report = _import_catalog(spec, storage, settings, lambda f, m: progress(0.9 * f, m))
    index = report.pop("index", None)
    progress(0.9, f"uploading dataset {spec.name}")
    items = [PutItem(prefix(spec.name) + "train.npz", dataset.train.to_npz()),
             PutItem(prefix(spec.name) + "test.npz", dataset.test.to_npz())]
    if index is not None:
        items.append(PutItem(prefix(spec.name) + "index.json", _json_bytes(index), "application/json"))
    storage.put_many(items)
    meta = {
        "name": spec.name, "format": spec.format, "imported_at": datetime.now(UTC).isoformat(),
        "vocabulary": dataset.vocabulary, "roles": dataset.roles, "image_size": dataset.image_size,
        "channels": dataset.channels, "counts": counts_of(dataset),
        "sizes": {"train": len(dataset.train), "test": len(dataset.test)}, "import": spec.model_dump(mode="json"),
        **report,
    }
    storage.put_json(meta_key(spec.name), meta)  # last: the dataset is complete
    progress(1.0, f"dataset {spec.name} imported")
    return meta


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def load_meta(name: str, storage: Storage) -> dict | None:
    key = meta_key(name)
    return storage.get_json(key) if storage.exists(key) else None


def load_pairs(name: str, storage: Storage, settings: Settings, progress: Progress
               ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(context, description) train and test pairs of a descriptions dataset, importing a built-in one."""
    meta = load_meta(name, storage)
    if meta is None:
        import_dataset(default_import(name), storage, settings, progress)
        meta = storage.get_json(meta_key(name))
    if meta.get("format") != "descriptions":
        raise JobFailure(f"dataset {name} holds images, not product descriptions", code="wrong_dataset_format",
                         field="input.dataset")

    def read(split: str) -> list[tuple[str, str]]:
        lines = storage.get(prefix(name) + f"{split}.jsonl").decode().splitlines()
        return [(row["context"], row["description"]) for row in map(json.loads, filter(None, lines))]

    return read("train"), read("test")


def load_dataset(name: str, storage: Storage, settings: Settings, progress: Progress) -> ImageDataset:
    """The dataset from object storage, importing a built-in one first when it is not there yet."""
    meta = load_meta(name, storage)
    if meta is None:
        import_dataset(default_import(name), storage, settings, progress)
        meta = storage.get_json(meta_key(name))
    if meta.get("format") == "descriptions":
        raise JobFailure(f"dataset {name} holds product descriptions, not images", code="wrong_dataset_format",
                         field="input.dataset")
    progress(1.0, f"loading dataset {name}")
    return ImageDataset(
        name=name,
        train=ImageSplit.from_npz(storage.get(prefix(name) + "train.npz")),
        test=ImageSplit.from_npz(storage.get(prefix(name) + "test.npz")),
        vocabulary=meta["vocabulary"],
        roles=meta.get("roles") or {"type": next(iter(meta["vocabulary"]))},
    )

"""Per-process worker resources, created lazily in the pool child (after Celery forks): clients,
the torch device, and caches of loaded models and datasets so repeated jobs skip the loading."""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import cached_property
from typing import Any

from shared.jobs import JobStore
from shared.registry import ModelRegistry, model_prefix, parse_ref
from shared.settings import Settings
from shared.storage import Storage

log = logging.getLogger(__name__)
WORKER_REDIS_RETRY_S = 60.0  # a Redis restart is ridden out inside the task, never by dropping it


def select_device(preference: str) -> Any:
    """CUDA when present (or asked for), CPU otherwise; decided at run time, never at import."""
    import torch

    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


class LRUCache:
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_load(self, key: str, load: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = load()
        with self._lock:  # two threads may both load; the later value wins, both are equivalent
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def forget(self, key: str, keep: str | None = None) -> None:
        """Drop `key` and every `key@<stamp>` entry (the imports of a dataset) except `keep`."""
        with self._lock:
            for name in [k for k in self._items if (k == key or k.startswith(key + "@")) and k != keep]:
                self._items.pop(name)


class WorkerContext:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models = LRUCache(settings.model_cache_size)
        self.datasets = LRUCache(2)
        self.vocabularies = LRUCache(32)  # prompt-interpreter tables per model version
        self.training_copies = LRUCache(2)  # description models' training copy, for the copy check
        self.feature_indexes = LRUCache(2)  # nearest real items, per dataset and classifier version
        self.catalogs = LRUCache(2)  # items by id with their photos, for visual search

    @cached_property
    def store(self) -> JobStore:
        return JobStore.from_url(self.settings.redis_url, ttl_s=self.settings.job_ttl_s, retry_s=WORKER_REDIS_RETRY_S)

    @cached_property
    def storage(self) -> Storage:
        return Storage(self.settings)

    @cached_property
    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.store.redis)

    @cached_property
    def device(self) -> Any:
        device = select_device(self.settings.device)
        log.info("worker device: %s", device)
        return device

    def load_model(self, ref: str) -> Any:
        """A model version, loaded once per process and kept on the worker's device."""
        def load() -> Any:
            import torch

            from worker.families import load_checkpoint

            family, version = parse_ref(ref)
            blob = self.storage.get(model_prefix(family, version) + "model.pt")
            checkpoint = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
            return load_checkpoint(family, checkpoint, ref).to(self.device)

        return self.models.get_or_load(ref, load)

    @cached_property
    def interpreter(self) -> Any:
        """The prompt interpreter, its sentence-transformer loaded once per worker process."""
        from worker.prompts import load_interpreter

        return load_interpreter(self.settings)

    def vocabulary(self, ref: str, vocabulary: dict[str, list[str]], roles: dict[str, str]) -> Any:
        """The interpreter's tables and embeddings for one model version, computed once."""
        kind, colour = roles["type"], roles.get("colour")
        return self.vocabularies.get_or_load(ref, lambda: self.interpreter.vocabulary(
            vocabulary[kind], vocabulary.get(colour, []) if colour else []))

    def training_copy(self, dataset: str) -> Any:
        """A description dataset's training copy indexed for the copy check, and the way its product
        names spell each type; built once per process."""
        from worker.datasets.store import load_pairs
        from worker.description_scoring import TrainingCopy

        def build() -> Any:
            train, _ = load_pairs(dataset, self.storage, self.settings, lambda *_: None)
            return TrainingCopy.build(train)

        return self.training_copies.get_or_load(dataset, build)

    def image_dataset(self, name: str, progress: Callable[[float, str], None] | None = None) -> Any:
        """An image dataset from object storage (importing a built-in one on first use), once per process
        and import: the cache is keyed by the import's stamp, so a re-import made by another worker is
        picked up here too (one small meta.json read per call) instead of serving the old images."""
        from worker.datasets.items import catalog_stamp
        from worker.datasets.store import load_dataset, load_meta

        stamp = catalog_stamp(load_meta(name, self.storage))
        self.datasets.forget(name, keep=f"{name}@{stamp}")  # an older import's images are freed now
        return self.datasets.get_or_load(
            f"{name}@{stamp}", lambda: load_dataset(name, self.storage, self.settings, progress or (lambda *_: None)))

    def catalog_items(self, dataset: str) -> Any:
        """A dataset's items by id (photos, conditions) for visual search, built once per process."""
        from worker.datasets.items import CatalogItems, catalog_stamp
        from worker.datasets.store import load_meta

        return self.catalogs.get_or_load(dataset, lambda: CatalogItems(
            dataset, self.image_dataset(dataset), catalog_stamp(load_meta(dataset, self.storage))))

    def feature_index(self, dataset: str, classifier_ref: str, *, build: bool = True,
                      progress: Callable[[float, str], None] | None = None) -> Any:
        """The nearest-item index of a dataset under a classifier version: loaded from object storage,
        or (with `build`) built and stored there first. None when it is not stored and `build` is off:
        interactive jobs do not pay for embedding a whole catalog."""
        from shared.registry import feature_index_key
        from worker.feature_index import FeatureIndex, build_index

        key = feature_index_key(dataset, classifier_ref)

        def load() -> Any:
            if self.storage.exists(key):
                return FeatureIndex.from_npz(self.storage.get(key))
            if not build:
                return None
            catalog = f"datasets/{dataset}/index.json"
            titles = ({row["id"]: row.get("title") or "" for row in self.storage.get_json(catalog)}
                      if self.storage.exists(catalog) else {})
            index = build_index(self.load_model(classifier_ref), self.image_dataset(dataset, progress), titles,
                                self.device, progress or (lambda *_: None))
            self.storage.put(key, index.to_npz())
            return index

        index = self.feature_indexes.get_or_load(f"{dataset}|{classifier_ref}", load)
        if index is None:
            self.feature_indexes.forget(f"{dataset}|{classifier_ref}")  # look again next time
        return index

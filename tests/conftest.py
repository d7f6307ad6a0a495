"""Fixtures: a private Valkey and SeaweedFS on free ports, the API over real HTTP, and a real Celery
worker subprocess. Nothing is mocked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from deploy.local.servers import LocalStack
from shared.jobs import JobStore
from shared.registry import ModelRegistry
from shared.settings import Settings
from shared.storage import Storage
from tests.support import ApiServer, Client, WorkerProcess, datasets_dir, settings_from, stack_env


@pytest.fixture(scope="session")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("var")


@pytest.fixture(scope="session")
def stack(var_dir: Path) -> Iterator[LocalStack]:
    local = LocalStack(var_dir / "servers").start()
    yield local
    local.stop()


@pytest.fixture(scope="session")
def env(stack: LocalStack, var_dir: Path) -> dict[str, str]:
    return stack_env(stack, var_dir)


@pytest.fixture(scope="session")
def settings(env: dict[str, str]) -> Settings:
    return settings_from(env)


@pytest.fixture(scope="session")
def store(settings: Settings) -> JobStore:
    return JobStore.from_url(settings.redis_url, ttl_s=settings.job_ttl_s)


@pytest.fixture(scope="session")
def registry(store: JobStore) -> ModelRegistry:
    return ModelRegistry(store.redis)


@pytest.fixture(scope="session")
def storage(settings: Settings) -> Storage:
    s = Storage(settings)
    s.ensure_bucket()
    return s


@pytest.fixture(scope="session")
def api(settings: Settings) -> Iterator[ApiServer]:
    server = ApiServer(settings).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def client(api: ApiServer) -> Client:
    return Client(api.url)


@pytest.fixture(scope="session")
def worker(env: dict[str, str], var_dir: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(env, var_dir / "worker.log").start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def fashion_mnist_available() -> Path:
    folder = datasets_dir()
    if folder is None or not (folder / "fashion-mnist").is_dir():
        pytest.skip("ATELIER_DATASETS/fashion-mnist is not available")
    return folder


@pytest.fixture(scope="session")
def trained_model(client: Client, worker: WorkerProcess, fashion_mnist_available: Path) -> str:
    """A tiny CVAE trained over HTTP once per session; returns its model reference."""
    job = client.submit("train", {"family": "cvae", "dataset": "fashion-mnist", "preset": "tiny", "seed": 3})
    done = client.wait(job["id"], timeout=240)
    assert done["status"] == "succeeded", (done, worker.tail())
    return done["output"]["model"]


@pytest.fixture
def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, decode_responses=True)


CATALOG_SLICE = {"name": "catalog-slice", "classes": ["Jumpsuit", "Rompers", "Tshirts", "Dresses", "Casual Shoes",
                                                      "Handbags"],
                 "max_per_class": 40, "min_class_count": 8}


@pytest.fixture(scope="session")
def catalog_available() -> Path:
    folder = datasets_dir()
    if folder is None or not (folder / "fashion-product-images-small" / "styles.csv").is_file():
        pytest.skip("ATELIER_DATASETS/fashion-product-images-small is not available")
    return folder


@pytest.fixture(scope="session")
def catalog_slice(client: Client, worker: WorkerProcess, catalog_available: Path) -> dict:
    """A six-class slice of the demo catalog, imported over HTTP once per session."""
    job = client.submit("import_dataset", CATALOG_SLICE)
    done = client.wait(job["id"], timeout=240)
    assert done["status"] == "succeeded", (done, worker.tail())
    return done


@pytest.fixture(scope="session")
def catalog_models(client: Client, catalog_slice: dict) -> dict[str, str]:
    """Tiny cvae, cgan and diffusion models trained on the slice (not activated, so they never shadow
    other tests)."""
    jobs = {family: client.submit("train", {"family": family, "dataset": "catalog-slice", "preset": "tiny",
                                            "seed": 4, "promote": "never", "max_train_examples": 240})
            for family in ("cvae", "cgan", "diffusion")}
    refs = {}
    for family, job in jobs.items():
        done = client.wait(job["id"], timeout=300)
        assert done["status"] == "succeeded", done
        refs[family] = done["output"]["model"]
    return refs


@pytest.fixture(scope="session")
def catalog_classifier(client: Client, catalog_slice: dict) -> dict:
    """A tiny domain classifier on the slice (not activated); its train job's output. Models trained
    after it on the slice are evaluated with it, and augment runs gate with it."""
    done = client.wait(client.submit("train", {"family": "classifier", "dataset": "catalog-slice", "preset": "tiny",
                                               "epochs": 2, "seed": 1, "promote": "never"})["id"], timeout=300)
    assert done["status"] == "succeeded", done
    return done["output"]

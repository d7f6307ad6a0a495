"""Redis lost its data but object storage kept the models: the registry is rebuilt from the stored
versions, counters move past them, and a training run never overwrites a stored version."""

from __future__ import annotations

import pytest

from shared.errors import JobFailure
from shared.jobs import JobStore
from shared.registry import ModelRegistry, parse_ref
from shared.schemas import JobType
from shared.storage import Storage
from tests.support import on_redis_db, settings_from
from worker.context import WorkerContext
from worker.handlers.common import claim_model_version

pytestmark = pytest.mark.e2e


def test_registry_is_restored_from_storage(env: dict[str, str], storage: Storage, trained_model: str) -> None:
    settings = settings_from(on_redis_db(env, 11))
    store = JobStore.from_url(settings.redis_url)
    store.redis.flushdb()  # a Redis that lost everything
    registry = ModelRegistry(store.redis)
    assert registry.is_empty()
    restored = registry.restore(storage)
    assert trained_model in restored
    family, version = parse_ref(trained_model)
    found = registry.get(family, version)
    assert found is not None and not found.active  # an operator chooses what is active again
    assert registry.restore(storage) == []  # idempotent
    job, _ = store.create(JobType.TRAIN, {"family": family}, owner="restore-test")
    new_family, new_version = parse_ref(store.model_version_for(job.id, family))
    stored = max(int(m.version[1:]) for m in registry.list(family))
    assert new_family == family and int(new_version[1:]) == stored + 1


def test_training_refuses_a_version_storage_already_holds(env: dict[str, str], trained_model: str) -> None:
    settings = settings_from(on_redis_db(env, 12))
    ctx = WorkerContext(settings)
    ctx.store.redis.flushdb()  # counters gone: the next number handed out is v1, which storage holds
    family, version = parse_ref(trained_model)
    ctx.store.redis.set(f"atelier:models:seq:{family}", int(version[1:]) - 1)
    job, _ = ctx.store.create(JobType.TRAIN, {"family": family}, owner="restore-test")
    with pytest.raises(JobFailure) as refused:
        claim_model_version(ctx, job, family)
    assert refused.value.code == "model_version_conflict"

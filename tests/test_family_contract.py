"""The model-family contract (worker/families.py), run over every family: a new family passes these
with its model file, its trainer, its ImageFamily entry and its row in shared/families.py."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
import torch

from shared.errors import ModelUnloadable
from shared.families import AUGMENT_FAMILIES, FACTS, IMAGE_FAMILIES, Family
from shared.schemas import TrainInput
from tests.test_cgan import toy_split
from worker.datasets.base import ImageDataset
from worker.families import IMAGE_FAMILIES as CONTRACTS
from worker.families import LOADERS, SampleRequest, load_checkpoint
from worker.handlers.train import evaluate_version
from worker.images import to_uint8
from worker.models.requests import in_passes
from worker.training.common import TrainParams

CPU = torch.device("cpu")
DATASET = ImageDataset("toy", toy_split(48, 16, 0), toy_split(16, 16, 1),
                       {"articleType": ["Dress", "Jumpsuit"], "baseColour": ["Black", "Red", "Blue"]},
                       roles={"type": "articleType", "colour": "baseColour"})


def test_every_family_has_one_row_and_a_loader() -> None:
    assert set(CONTRACTS) == set(IMAGE_FAMILIES)
    assert set(LOADERS) == set(FACTS) == {f.value for f in Family}
    assert set(AUGMENT_FAMILIES) <= set(IMAGE_FAMILIES)
    for name, facts in FACTS.items():
        assert facts.name == name and facts.primary, name


@pytest.fixture(scope="module", params=sorted(CONTRACTS))
def trained(request: pytest.FixtureRequest) -> tuple[str, object]:
    family = CONTRACTS[request.param]
    config = family.config_for(DATASET, "tiny")
    params = TrainParams(epochs=1, batch_size=16, learning_rate=1e-3, seed=1)
    result = family.train(config, params, DATASET.train, DATASET.test, device=CPU, progress=lambda *_: None,
                          should_stop=lambda: False, stratify_by="articleType",
                          recipe=family.recipe_for("tiny"))
    assert len(result.history) == 1 and result.history[0]["seconds"] >= 0
    return request.param, result.model


def test_samples_are_images_deterministic_per_seed_and_vary_across_seeds(trained: tuple[str, object]) -> None:
    name, model = trained
    family = CONTRACTS[name]
    request = SampleRequest({"articleType": 1, "baseColour": 0}, [5, 6, 7])
    images = family.sample(model, request, CPU)
    assert images.shape == (3, 3, 16, 16) and images.dtype == torch.float32
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    assert torch.equal(images, family.sample(model, request, CPU))
    assert not torch.equal(images[0], images[1])


def test_jobs_sampled_together_get_the_images_they_get_alone(trained: tuple[str, object]) -> None:
    """Batching across jobs (worker/batching.py): one forward pass for several requests, each with its
    own conditions and seeds, gives each the same PNG bytes as sampling it on its own."""
    name, model = trained
    family = CONTRACTS[name]
    requests = [SampleRequest({"articleType": 1, "baseColour": 0}, [5, 6, 7]),
                SampleRequest({"articleType": 0, "baseColour": 2}, [11]),
                SampleRequest({"articleType": 1, "baseColour": 1}, [5, 40])]
    together = family.sample_many(model, requests, CPU)
    assert [len(images) for images in together] == [3, 1, 2]
    for request, images in zip(requests, together, strict=True):
        assert (to_uint8(images) == to_uint8(family.sample(model, request, CPU))).all()
    with pytest.raises(ValueError, match="sampling settings"):
        family.sample_many(model, [requests[0], SampleRequest({"articleType": 1, "baseColour": 0}, [1],
                                                              temperature=0.5)], CPU)


def test_a_cpu_samples_a_large_batch_in_passes_with_the_same_images(trained: tuple[str, object],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Families whose per-image cost rises with the batch on a CPU sample in passes of at most
    CPU_PASS_IMAGES (worker/models/requests.py); the images are the ones one pass gives."""
    name, model = trained
    family = CONTRACTS[name]
    if not hasattr(family.module, "CPU_PASS_IMAGES"):
        pytest.skip(f"{name} samples in one pass at any size")
    request = SampleRequest({"articleType": 1, "baseColour": 0}, [3, 4, 5, 6, 7])
    monkeypatch.setattr(family.module, "CPU_PASS_IMAGES", 1000)
    whole = family.sample(model, request, CPU)
    monkeypatch.setattr(family.module, "CPU_PASS_IMAGES", 2)
    # the same PNG bytes (floats may differ in their last bits with the batch size, as they may for any batch)
    assert (to_uint8(family.sample(model, request, CPU)) == to_uint8(whole)).all()


def test_in_passes_splits_only_on_a_cpu() -> None:
    rows: list[slice] = []

    def run(part: slice) -> torch.Tensor:
        rows.append(part)
        return torch.arange(100)[part]

    assert torch.equal(in_passes(run, 70, "cpu", 32), torch.arange(70))
    assert [(r.start, r.stop) for r in rows] == [(0, 32), (32, 64), (64, 70)]
    rows.clear()
    assert torch.equal(in_passes(run, 70, torch.device("cuda"), 32), torch.arange(70)) and len(rows) == 1


def test_checkpoint_round_trip_gives_the_same_images(trained: tuple[str, object]) -> None:
    name, model = trained
    family = CONTRACTS[name]
    buffer = io.BytesIO()
    torch.save(family.checkpoint(model), buffer)
    checkpoint = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert checkpoint["family"] == name
    restored = LOADERS[name](checkpoint)
    request = SampleRequest({"articleType": 0, "baseColour": 2}, [11, 12])
    assert torch.equal(family.sample(model, request, CPU), family.sample(restored, request, CPU))


def test_a_checkpoint_this_code_cannot_rebuild_fails_naming_the_version(trained: tuple[str, object]) -> None:
    """Written by another release (an unknown config field, a missing tensor): a clear job failure."""
    name, model = trained
    checkpoint = CONTRACTS[name].checkpoint(model)
    unknown_field = {**checkpoint, "config": {**checkpoint["config"], "colour_source": "full"}}
    weight = next(k for k in checkpoint["state_dict"] if k.endswith("weight"))
    missing_tensor = {**checkpoint, "state_dict": {k: v for k, v in checkpoint["state_dict"].items() if k != weight}}
    for broken in (unknown_field, missing_tensor):
        with pytest.raises(ModelUnloadable, match=f"model {name}@v9 cannot be loaded") as caught:
            load_checkpoint(name, broken, f"{name}@v9")
        assert caught.value.code == "model_unloadable"


def test_a_judge_this_code_cannot_rebuild_leaves_the_version_unjudged(trained: tuple[str, object]) -> None:
    """The train job still publishes: its evaluation says why it was skipped instead of failing the job."""
    name, model = trained
    judge = SimpleNamespace(ref="classifier@v9")

    def load_model(ref: str) -> object:
        raise ModelUnloadable(f"model {ref} cannot be loaded by this worker's code")

    ctx = SimpleNamespace(registry=SimpleNamespace(for_dataset=lambda *_: judge), load_model=load_model)
    dataset = SimpleNamespace(name="catalog", vocabulary={"articleType": ["a"], "baseColour": ["b"]})
    evaluation = evaluate_version(ctx, CONTRACTS[name], model, dataset, TrainInput(family=name, dataset="catalog"), 0)
    assert evaluation == {"skipped": "the judge could not be loaded: model classifier@v9 cannot be loaded by "
                                     "this worker's code"}


def test_interpolation_hooks(trained: tuple[str, object]) -> None:
    name, model = trained
    family = CONTRACTS[name]
    if not family.facts.interpolates:
        pytest.skip(f"{name} does not interpolate")
    cond = {"articleType": torch.tensor([0]), "baseColour": torch.tensor([1])}
    z = family.latent(model, {"articleType": 0, "baseColour": 1}, 3, CPU)
    e = family.embed(model, cond)
    images = family.decode(model, torch.cat([z, z]), torch.cat([e, e]))
    assert images.shape == (2, 3, 16, 16)
    assert (family.encode is not None) == family.facts.encodes
    if family.encode is not None:
        assert family.encode(model, images[:1], cond).shape == z.shape


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_training_stops_at_its_time_budget(name: str) -> None:
    family = CONTRACTS[name]
    config = family.config_for(DATASET, "tiny")
    params = TrainParams(epochs=500, batch_size=8, learning_rate=1e-3, seed=1, max_minutes=0.3 / 60)
    result = family.train(config, params, DATASET.train, DATASET.test, device=CPU, progress=lambda *_: None,
                          should_stop=lambda: False, stratify_by="articleType", recipe=family.recipe_for("tiny"))
    assert result.stopped_early and "time budget" in result.stopped_early
    assert 1 <= len(result.history) < 500


@pytest.mark.parametrize("name", sorted(FACTS))
def test_every_family_takes_a_time_budget_at_submit(name: str) -> None:
    inp = TrainInput(family=name, dataset="catalog", max_minutes=5)
    assert inp.max_minutes == 5

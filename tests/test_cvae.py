"""The CVAE, its loss and its training loop as plain functions (no servers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.errors import JobCanceled
from tests.support import MemoryCheckpoint
from worker.datasets.base import ImageSplit
from worker.models import cvae
from worker.training.cvae_trainer import TrainParams, train_cvae

CPU = torch.device("cpu")


def toy_split(n: int = 96, classes: int = 3, size: int = 28, seed: int = 0) -> ImageSplit:
    """Class k is a bright horizontal band at a class-specific height: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    images = rng.integers(0, 40, (n, size, size, 1), dtype=np.uint8)
    for i, k in enumerate(labels):
        top = 4 + k * 8
        images[i, top:top + 5, :, 0] = 230
    return ImageSplit(images, {"class": labels.astype(np.int64)})


def small_config(**kwargs: object) -> cvae.CVAEConfig:
    return cvae.CVAEConfig(conditions={"class": 3}, width=8, embed_dim=4, **kwargs)


@pytest.mark.parametrize(("size", "channels"), [(28, 1), (64, 3)])
def test_shapes(size: int, channels: int) -> None:
    config = cvae.CVAEConfig(image_size=size, channels=channels, conditions={"class": 5, "colour": 4}, width=8)
    model = cvae.CVAE(config)
    x = torch.rand(2, channels, size, size)
    cond = {"class": torch.tensor([0, 4]), "colour": torch.tensor([1, 3])}
    logits, mu, logvar = model(x, cond)
    assert logits.shape == x.shape and mu.shape == logvar.shape == (2, 128)
    assert cvae.sample(model, {"class": 1, "colour": 2}, [1, 2, 3]).shape == (3, channels, size, size)


def test_kl_closed_form_matches_torch_distributions() -> None:
    mu, logvar = torch.randn(4, 128), torch.randn(4, 128)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).sum(dim=1)
    assert torch.allclose(cvae.kl_divergence(mu, logvar), expected, atol=1e-4)


def test_sampling_is_deterministic_per_seed() -> None:
    model = cvae.CVAE(small_config())
    a = cvae.sample(model, {"class": 1}, [5, 6])
    b = cvae.sample(model, {"class": 1}, [5, 6])
    c = cvae.sample(model, {"class": 1}, [7, 6])
    assert torch.equal(a, b) and not torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])


def test_checkpoint_rebuilds_the_same_model() -> None:
    model = cvae.CVAE(small_config())
    rebuilt = cvae.from_checkpoint(cvae.to_checkpoint(model))
    assert rebuilt.config == model.config
    assert torch.equal(cvae.sample(model, {"class": 2}, [1]), cvae.sample(rebuilt, {"class": 2}, [1]))


def params(**kwargs: object) -> TrainParams:
    return TrainParams(**{"epochs": 4, "batch_size": 16, "learning_rate": 3e-3, "seed": 1, **kwargs})


def test_training_reduces_held_out_loss_and_reports_progress() -> None:
    seen: list[tuple[float, str]] = []
    result = train_cvae(small_config(), params(), toy_split(), toy_split(48, seed=1), device=CPU,
                        progress=lambda f, m: seen.append((f, m)), should_stop=lambda: False)
    losses = [row["test_loss"] for row in result.history]
    assert len(losses) == 4 and losses[-1] < losses[0] * 0.9
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert any("epoch 4/4" in m for _, m in seen)


def test_cancel_stops_training() -> None:
    calls = iter(range(1000))
    with pytest.raises(JobCanceled):
        train_cvae(small_config(), params(), toy_split(), toy_split(16), device=CPU,
                   progress=lambda *_: None, should_stop=lambda: next(calls) >= 3)



def test_resume_after_a_crash_matches_an_uninterrupted_run() -> None:
    train, test = toy_split(), toy_split(32, seed=2)
    whole = train_cvae(small_config(), params(epochs=3), train, test, device=CPU,
                       progress=lambda *_: None, should_stop=lambda: False)
    checkpoint = MemoryCheckpoint()
    steps = iter(range(10_000))
    per_epoch = 96 // 16
    with pytest.raises(JobCanceled):  # "crash" in the middle of epoch 2
        train_cvae(small_config(), params(epochs=3), train, test, device=CPU, progress=lambda *_: None,
                   should_stop=lambda: next(steps) >= per_epoch + 2, checkpoint=checkpoint)
    assert checkpoint.saves == 1
    resumed = train_cvae(small_config(), params(epochs=3), train, test, device=CPU, progress=lambda *_: None,
                         should_stop=lambda: False, checkpoint=checkpoint)
    assert resumed.resumed_from_epoch == 1
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.history[-1]["test_loss"] == pytest.approx(whole.history[-1]["test_loss"], rel=1e-4)


def test_stratified_head_covers_every_class() -> None:
    split = toy_split(300, classes=3)
    head = split.stratified_head(6, "class")
    assert len(head) == 6 and sorted(set(head.conditions["class"].tolist())) == [0, 1, 2]


def test_class_means_are_fitted_and_sampled() -> None:
    train = toy_split(96)
    params = TrainParams(epochs=1, batch_size=32, learning_rate=2e-3, seed=0)
    model = train_cvae(small_config(), params, train, toy_split(32, seed=1), device=CPU,
                       progress=lambda *_: None, should_stop=lambda: False).model
    assert model.class_means.shape == (3, 128) and model.class_means.abs().sum() > 0
    assert model.latent_std.shape == (128,) and (model.latent_std > 0).any()
    at_mean = cvae.sample(model, {"class": 1}, [1, 2], mode="class_mean", spread=0.0)
    assert torch.equal(at_mean[0], at_mean[1])  # no spread: the mean itself
    spread = cvae.sample(model, {"class": 1}, [1, 2], mode="class_mean", spread=1.0)
    assert not torch.equal(spread[0], spread[1])
    # the statistics travel with the checkpoint
    restored = cvae.from_checkpoint(cvae.to_checkpoint(model))
    assert torch.equal(restored.class_means, model.class_means)

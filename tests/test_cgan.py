"""The multi-conditional GAN and its training loop as plain functions (no servers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support import whole_and_resumed
from worker.datasets.base import ImageSplit
from worker.models import cgan
from worker.training.cgan_trainer import (
    GANRecipe,
    class_loss,
    cutout,
    mode_seeking_loss,
    paired_conditions,
    train_cgan,
    translate,
)
from worker.training.common import TrainParams, epoch_order

CPU = torch.device("cpu")


def toy_split(n: int = 64, size: int = 16, seed: int = 0) -> ImageSplit:
    """Type sets where a block sits, colour sets its colour."""
    rng = np.random.default_rng(seed)
    kinds, colours = rng.integers(0, 2, n), rng.integers(0, 3, n)
    images = np.full((n, size, size, 3), 255, dtype=np.uint8)
    palette = np.array([[0, 0, 0], [200, 0, 0], [0, 0, 200]], dtype=np.uint8)
    for i in range(n):
        top = 2 if kinds[i] == 0 else size // 2
        images[i, top:top + 5, 3:-3] = palette[colours[i]]
    return ImageSplit(images, {"articleType": kinds.astype(np.int64), "baseColour": colours.astype(np.int64)})


def config(**kwargs: object) -> cgan.CGANConfig:
    return cgan.CGANConfig(image_size=16, conditions={"articleType": 2, "baseColour": 3}, g_width=8, d_width=8,
                           embed_dim=4, latent_dim=16, **kwargs)


def params(epochs: int = 2) -> TrainParams:
    return TrainParams(epochs=epochs, batch_size=16, learning_rate=2e-4, seed=3)


@pytest.mark.parametrize(("size", "channels"), [(28, 1), (64, 3)])
def test_shapes_and_range(size: int, channels: int) -> None:
    model = cgan.CGAN(cgan.CGANConfig(image_size=size, channels=channels, g_width=8, d_width=8, embed_dim=4))
    cond = {"articleType": torch.tensor([0, 9]), "baseColour": torch.tensor([3, 1])}
    fake = model.generator(torch.randn(2, 128), cond)
    assert fake.shape == (2, channels, size, size) and fake.abs().max() <= 1
    assert model.discriminator(fake, cond).shape == (2,)
    images = cgan.sample(model, {"articleType": 1, "baseColour": 2}, [1, 2, 3])
    assert images.shape == (3, channels, size, size) and 0 <= images.min() and images.max() <= 1


def test_projection_discriminator_uses_each_condition() -> None:
    torch.manual_seed(0)
    model = cgan.CGAN(config())
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    base = model.discriminator(x, {"articleType": torch.tensor([0]), "baseColour": torch.tensor([0])})
    other_type = model.discriminator(x, {"articleType": torch.tensor([1]), "baseColour": torch.tensor([0])})
    other_colour = model.discriminator(x, {"articleType": torch.tensor([0]), "baseColour": torch.tensor([2])})
    assert not torch.allclose(base, other_type) and not torch.allclose(base, other_colour)


def test_discriminator_layers_are_spectrally_normalized() -> None:
    model = cgan.CGAN(config())
    convs = [m for m in model.discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)
    model.discriminator.train()
    for _ in range(20):  # power iteration converges: largest singular value ~ 1
        model.discriminator(torch.randn(4, 3, 16, 16), {"articleType": torch.zeros(4, dtype=torch.long),
                                                        "baseColour": torch.zeros(4, dtype=torch.long)})
    weight = convs[0].weight.flatten(1)
    assert torch.linalg.matrix_norm(weight, ord=2).item() == pytest.approx(1.0, abs=0.1)


def test_hinge_losses() -> None:
    assert cgan.hinge_d_loss(torch.tensor([2.0]), torch.tensor([-2.0])).item() == 0.0  # confident and right
    assert cgan.hinge_d_loss(torch.tensor([0.0]), torch.tensor([0.0])).item() == 2.0
    assert cgan.hinge_g_loss(torch.tensor([1.5])).item() == -1.5


def test_translation_keeps_shape_and_is_seeded() -> None:
    x = torch.rand(4, 3, 16, 16)
    a = translate(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, translate(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, x)


def test_training_runs_updates_the_ema_and_is_deterministic() -> None:
    run = [train_cgan(config(), params(), toy_split(), toy_split(16, seed=1), device=CPU, progress=lambda *_: None,
                      should_stop=lambda: False) for _ in range(2)]
    history = run[0].history
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(np.isfinite(row["d_loss"]) and np.isfinite(row["g_loss"]) for row in history)
    model = run[0].model
    ema = dict(model.ema.named_parameters())
    assert any(not torch.equal(p, ema[name]) for name, p in model.generator.named_parameters())
    assert torch.equal(cgan.sample(model, {"articleType": 0, "baseColour": 1}, [7]),
                       cgan.sample(run[1].model, {"articleType": 0, "baseColour": 1}, [7]))



def test_resume_from_a_checkpoint_matches_an_uninterrupted_run() -> None:
    whole, resumed, interrupted = whole_and_resumed(
        lambda should_stop, checkpoint: train_cgan(config(), params(3), toy_split(), toy_split(16, seed=1),
                                                   device=CPU, progress=lambda *_: None, should_stop=should_stop,
                                                   checkpoint=checkpoint))
    assert len(interrupted.state["history"]) == 1
    assert resumed.resumed_from_epoch == 1
    assert resumed.history[-1]["d_loss"] == pytest.approx(whole.history[-1]["d_loss"], rel=1e-4)
    assert torch.allclose(cgan.sample(resumed.model, {"articleType": 1, "baseColour": 0}, [3]),
                          cgan.sample(whole.model, {"articleType": 1, "baseColour": 0}, [3]), atol=1e-5)


def test_checkpoint_round_trip_keeps_the_sampler() -> None:
    model = train_cgan(config(), params(1), toy_split(), toy_split(16, seed=1), device=CPU,
                       progress=lambda *_: None, should_stop=lambda: False).model
    restored = cgan.from_checkpoint(cgan.to_checkpoint(model))
    assert torch.equal(cgan.sample(model, {"articleType": 1, "baseColour": 2}, [5]),
                       cgan.sample(restored, {"articleType": 1, "baseColour": 2}, [5]))


def test_noise_reaches_every_block() -> None:
    """With noise_in_blocks, each block's conditional batch norm sees z as well as the conditions."""
    model = cgan.CGAN(config(noise_in_blocks=True))
    latent = model.config.latent_dim
    assert all(norm.gain.in_features == model.generator.embed.out_dim + latent for norm in model.generator.norms)
    old = cgan.CGAN(config())  # checkpoints from before keep their shapes
    assert all(norm.gain.in_features == old.generator.embed.out_dim for norm in old.generator.norms)


def test_mode_seeking_loss_falls_as_paired_images_differ() -> None:
    z = torch.randn(8, 16)
    same = torch.zeros(8, 3, 4, 4)
    apart = torch.cat([torch.zeros(4, 3, 4, 4), torch.ones(4, 3, 4, 4)])
    assert mode_seeking_loss(apart, z) < mode_seeking_loss(same, z)
    assert torch.isfinite(mode_seeking_loss(same, z))


def test_fakes_take_the_real_batch_conditions_in_pairs() -> None:
    cond = {"articleType": torch.tensor([3, 1, 4, 1, 5]), "baseColour": torch.tensor([0, 1, 2, 0, 1])}
    paired = paired_conditions(cond, 5)
    assert paired["articleType"].tolist() == [3, 1, 4, 3, 1] and paired["baseColour"].tolist() == [0, 1, 2, 0, 1]


def test_cutout_blanks_one_square_per_image_and_keeps_the_rest() -> None:
    x = torch.ones(64, 3, 16, 16)
    out = cutout(x, torch.Generator().manual_seed(0))
    blanked = (out == 0).all(dim=1).flatten(1).sum(dim=1)
    assert (blanked > 0).all() and (blanked <= 64).all() and ((out == 0) | (out == 1)).all()


def test_training_with_balanced_draws_runs_the_mode_seeking_loss_and_the_draws_favour_rare_types() -> None:
    split = toy_split(64)
    split.conditions["articleType"][:] = 0
    split.conditions["articleType"][:4] = 1  # a rare type: 4 of 64
    result = train_cgan(config(noise_in_blocks=True), params(1), split, toy_split(16, seed=1), device=CPU,
                        progress=lambda *_: None, should_stop=lambda: False, stratify_by="articleType",
                        recipe=GANRecipe(balance_power=1.0))
    assert result.history[0]["mode_seeking"] > 0
    order = epoch_order(split, np.random.default_rng(0), "articleType", 1.0)
    assert 0.3 < float((split.conditions["articleType"][order] == 1).mean()) < 0.7


def test_the_auxiliary_classifier_learns_the_real_labels_and_is_not_in_the_sampling_checkpoint() -> None:
    model = cgan.CGAN(config(aux_classifier=True))
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    cond = {"articleType": torch.tensor([0, 1, 0, 1]), "baseColour": torch.tensor([0, 1, 2, 0])}
    realness, classes = model.discriminator.judge(x, cond)
    assert realness.shape == (4,) and classes["articleType"].shape == (4, 2) and classes["baseColour"].shape == (4, 3)
    assert float(class_loss(classes, cond)) > 0 and float(class_loss(None, cond)) == 0
    model.eval()  # spectral norm's power iteration runs in training mode only
    assert model.discriminator.judge(x, cond)[0].allclose(model.discriminator(x, cond))
    result = train_cgan(config(aux_classifier=True), params(2), toy_split(), toy_split(16, seed=1), device=CPU,
                        progress=lambda *_: None, should_stop=lambda: False)
    assert result.history[-1]["d_class"] < result.history[0]["d_class"]  # D learns to tell the types apart
    assert not any(k.startswith("classify") for k in cgan.to_checkpoint(result.model)["state_dict"])

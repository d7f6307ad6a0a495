"""The diffusion family as plain functions (no servers): schedule, guidance, sampler, training loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support import whole_and_resumed
from tests.test_cgan import toy_split
from worker.models import diffusion
from worker.training.common import TrainParams
from worker.training.diffusion_trainer import DiffusionRecipe, drop_conditions, train_diffusion

CPU = torch.device("cpu")
COND = {"articleType": 1, "baseColour": 2}


def config(**kwargs: object) -> diffusion.DiffusionConfig:
    return diffusion.DiffusionConfig(**{"image_size": 16, "conditions": {"articleType": 2, "baseColour": 3},
                                        "width": 8, "mults": (1, 2), "embed_dim": 4, "steps": 3, **kwargs})


def params(epochs: int = 2) -> TrainParams:
    return TrainParams(epochs=epochs, batch_size=16, learning_rate=2e-3, seed=3)


def train(epochs: int = 2, **kwargs: object) -> diffusion.Diffusion:
    return train_diffusion(config(**kwargs), params(epochs), toy_split(), toy_split(16, seed=1), device=CPU,
                           progress=lambda *_: None, should_stop=lambda: False).model


@pytest.fixture(scope="module")
def model() -> diffusion.Diffusion:
    return train()


def test_the_schedule_runs_from_sigma_max_down_to_zero() -> None:
    levels = diffusion.sigmas(10)
    assert levels.shape == (11,) and levels[0] == pytest.approx(diffusion.SIGMA_MAX)
    assert levels[-2] == pytest.approx(diffusion.SIGMA_MIN) and levels[-1] == 0
    assert bool((levels[1:] < levels[:-1]).all())
    assert diffusion.sigmas(1).tolist() == [diffusion.SIGMA_MAX, 0.0]


@pytest.mark.parametrize(("size", "mults"), [(28, (1, 2, 2)), (64, (1, 2, 2, 4)), (16, (1, 2))])
def test_the_denoiser_keeps_the_shape_at_every_size(size: int, mults: tuple[int, ...]) -> None:
    net = diffusion.UNet(config(image_size=size, channels=1 if size == 28 else 3, mults=mults,
                                attention_levels=(len(mults) - 1,)))
    x = torch.randn(2, net.config.channels, size, size)
    out = diffusion.denoise(net, x, torch.tensor([0.5, 20.0]), net.null_embedding(2, "cpu"))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_preconditioning_at_zero_output_returns_the_skip_part() -> None:
    """A fresh network outputs 0 (zero-initialised last layer), so D(x; σ) = c_skip(σ) x."""
    net = diffusion.UNet(config())
    x = torch.randn(1, 3, 16, 16)
    out = diffusion.denoise(net, x, torch.tensor([1.0]), net.null_embedding(1, "cpu"))
    assert torch.allclose(out, x * 0.25 / 1.25, atol=1e-6)


def test_guidance_one_is_a_single_conditional_pass_and_zero_the_unconditional_model(
        model: diffusion.Diffusion) -> None:
    net = model.ema
    calls: list[int] = []
    handle = net.register_forward_hook(lambda _m, args, _out: calls.append(args[0].shape[0]))
    x = torch.randn(3, 3, 16, 16)
    e = net.embed({"articleType": torch.tensor([1, 1, 1]), "baseColour": torch.tensor([2, 2, 2])})
    cond = diffusion.guided(net, x, 2.0, e, 1.0)
    uncond = diffusion.guided(net, x, 2.0, e, 0.0)
    mixed = diffusion.guided(net, x, 2.0, e, 3.0)
    handle.remove()
    assert calls == [3, 3, 6]  # one pass each, then conditional and unconditional in one batch
    assert torch.allclose(mixed, uncond + 3.0 * (cond - uncond), atol=1e-5)
    assert not torch.allclose(cond, uncond)


def test_an_image_depends_on_its_seed_alone(model: diffusion.Diffusion) -> None:
    alone = diffusion.sample(model, COND, [7])
    together = diffusion.sample(model, COND, [3, 7, 9])
    assert torch.allclose(alone[0], together[1], atol=1e-4)
    assert torch.equal(together, diffusion.sample(model, COND, [3, 7, 9]))
    assert not torch.allclose(together[0], together[1])


def test_steps_guidance_and_temperature_change_the_images(model: diffusion.Diffusion) -> None:
    base = diffusion.sample(model, COND, [1, 2])
    assert base.shape == (2, 3, 16, 16) and 0 <= float(base.min()) and float(base.max()) <= 1
    for options in ({"steps": 6}, {"guidance": 0.0}, {"temperature": 0.5}):
        assert not torch.allclose(base, diffusion.sample(model, COND, [1, 2], **options)), options


def test_decode_follows_an_interpolated_condition(model: diffusion.Diffusion) -> None:
    z = diffusion.latent(model, COND, 4, CPU)
    e_a = diffusion.embed(model, {"articleType": torch.tensor([0]), "baseColour": torch.tensor([0])})
    e_b = diffusion.embed(model, {"articleType": torch.tensor([1]), "baseColour": torch.tensor([2])})
    frames = diffusion.decode(model, z.repeat(3, 1), torch.cat([torch.lerp(e_a, e_b, t) for t in (0.0, 0.5, 1.0)]))
    assert frames.shape == (3, 3, 16, 16)
    # the end frames are the two classes' samples from the same starting noise
    assert torch.allclose(frames[2], diffusion.sample(model, COND, [4])[0], atol=1e-4)


def test_conditions_are_dropped_at_the_given_rate() -> None:
    cond = {"articleType": torch.zeros(4000, dtype=torch.long), "baseColour": torch.ones(4000, dtype=torch.long)}
    dropped = drop_conditions(cond, 0.1, torch.Generator().manual_seed(0))
    share = float((dropped["articleType"] == -1).float().mean())
    assert 0.08 < share < 0.12
    assert torch.equal(dropped["articleType"] == -1, dropped["baseColour"] == -1)  # all conditions at once


def test_training_lowers_the_held_out_loss_and_is_deterministic() -> None:
    runs = [train_diffusion(config(), params(4), toy_split(), toy_split(16, seed=1), device=CPU,
                            progress=lambda *_: None, should_stop=lambda: False) for _ in range(2)]
    history = runs[0].history
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert history[-1]["test_loss"] < history[0]["test_loss"]
    assert all(np.isfinite(row["train_loss"]) for row in history)
    assert torch.equal(diffusion.sample(runs[0].model, COND, [5]), diffusion.sample(runs[1].model, COND, [5]))
    model = runs[0].model
    ema = dict(model.ema.named_parameters())
    assert any(not torch.equal(p, ema[name]) for name, p in model.net.named_parameters())


def test_resume_from_a_checkpoint_matches_an_uninterrupted_run() -> None:
    whole, resumed, interrupted = whole_and_resumed(
        lambda should_stop, checkpoint: train_diffusion(config(), params(3), toy_split(), toy_split(16, seed=1),
                                                        device=CPU, progress=lambda *_: None,
                                                        should_stop=should_stop, checkpoint=checkpoint))
    assert len(interrupted.state["history"]) == 1 and resumed.resumed_from_epoch == 1
    assert resumed.history[-1]["test_loss"] == pytest.approx(whole.history[-1]["test_loss"], rel=1e-4)
    assert torch.allclose(diffusion.sample(resumed.model, COND, [3]), diffusion.sample(whole.model, COND, [3]),
                          atol=1e-5)


def test_balanced_draws_favour_rare_types() -> None:
    split = toy_split(64)
    split.conditions["articleType"][:] = 0
    split.conditions["articleType"][:4] = 1  # 4 of 64 are the rare type
    seen: list[int] = []
    original = diffusion.UNet.embed

    def spy(self: diffusion.UNet, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.training:
            seen.extend(v for v in cond["articleType"].tolist() if v >= 0)
        return original(self, cond)

    diffusion.UNet.embed = spy  # type: ignore[method-assign]
    try:
        train_diffusion(config(), params(2), split, toy_split(16, seed=1), device=CPU, progress=lambda *_: None,
                        should_stop=lambda: False, stratify_by="articleType", recipe=DiffusionRecipe(balance_power=1.0))
    finally:
        diffusion.UNet.embed = original  # type: ignore[method-assign]
    assert 0.3 < np.mean(np.array(seen) == 1) < 0.7  # about half, against 1/16 of the data


def test_checkpoint_holds_the_ema_denoiser_and_its_config(model: diffusion.Diffusion) -> None:
    checkpoint = diffusion.to_checkpoint(model)
    assert checkpoint["family"] == "diffusion" and checkpoint["config"]["mults"] == (1, 2)
    restored = diffusion.from_checkpoint(checkpoint)
    assert restored.config == model.config
    assert torch.equal(diffusion.sample(restored, COND, [2], steps=2), diffusion.sample(model, COND, [2], steps=2))

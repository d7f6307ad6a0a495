"""The domain classifier as plain functions: it learns two heads on images where the answer is
visible, its checkpoint round-trips, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.support import whole_and_resumed
from worker.datasets.base import ImageSplit
from worker.models import classifier
from worker.training.classifier_trainer import (
    Schedule,
    augment,
    calibrate,
    evaluate,
    expected_calibration_error,
    fit_temperature,
    train_classifier,
)
from worker.training.common import TimeBudget, TrainParams, epoch_order

CPU = torch.device("cpu")
COLOURS = np.array([[220, 30, 30], [30, 200, 40], [40, 60, 220]], dtype=np.uint8)


def draw_squares(row: np.ndarray, colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """16x16 RGB: a coloured 6x6 square in the top or bottom half, anywhere across, on noisy grey."""
    n = len(row)
    images = np.full((n, 16, 16, 3), 128, dtype=np.uint8) + rng.integers(0, 20, (n, 16, 16, 3), dtype=np.uint8)
    for i, x in enumerate(rng.integers(0, 10, n)):
        y = 1 + 8 * int(row[i])
        images[i, y:y + 6, x:x + 6] = COLOURS[colour[i]]
    return images


def squares(n: int, seed: int) -> ImageSplit:
    """Heads: row and colour (both unchanged by the flips and shifts of augmentation)."""
    rng = np.random.default_rng(seed)
    row, colour = rng.integers(0, 2, n), rng.integers(0, 3, n)
    return ImageSplit(draw_squares(row, colour, rng), {"row": row.astype(np.int64), "colour": colour.astype(np.int64)})


CONFIG = classifier.ClassifierConfig(image_size=16, channels=3, conditions={"row": 2, "colour": 3}, width=8,
                                     blocks=1, dropout=0.0)


def params(epochs: int) -> TrainParams:
    return TrainParams(epochs=epochs, batch_size=32, learning_rate=5e-3, seed=2)


def test_learns_both_heads_and_round_trips() -> None:
    train, test = squares(384, 0), squares(128, 1)
    result = train_classifier(CONFIG, params(4), train, test, device=CPU, progress=lambda *_: None,
                              should_stop=lambda: False)
    final = result.final
    assert final["accuracy_colour"] > 0.95 and final["accuracy_row"] > 0.95, final
    assert result.history[0]["test_loss"] > final["test_loss"]
    restored = classifier.from_checkpoint(classifier.to_checkpoint(result.model))
    assert evaluate(restored, test, 64, CPU) == evaluate(result.model, test, 64, CPU)
    x = torch.rand(5, 3, 16, 16)
    assert restored.features(x).shape == (5, CONFIG.feature_dim)
    probs = classifier.predict(restored, x)
    assert set(probs) == {"row", "colour"} and torch.allclose(probs["colour"].sum(-1), torch.ones(5))


def test_augmentation_keeps_shapes_and_is_seeded() -> None:
    x = torch.rand(6, 3, 16, 16)
    a = augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, augment(x, torch.Generator().manual_seed(1)))


def test_resume_matches_an_uninterrupted_run() -> None:
    train, test = squares(128, 0), squares(64, 1)
    whole, resumed, _ = whole_and_resumed(
        lambda should_stop, checkpoint: train_classifier(CONFIG, params(2), train, test, device=CPU,
                                                         progress=lambda *_: None, should_stop=should_stop,
                                                         checkpoint=checkpoint))
    assert resumed.resumed_from_epoch == 1
    assert resumed.final["test_loss"] == pytest.approx(whole.final["test_loss"], rel=1e-4)


def test_a_smaller_input_size_and_colour_statistics_keep_the_interface() -> None:
    config = classifier.ClassifierConfig(image_size=16, channels=3, conditions={"row": 2, "colour": 3}, width=8,
                                         blocks=1, stages=2, input_size=8, dropout=0.0, colour_heads=("colour",))
    train, test = squares(384, 0), squares(128, 1)
    result = train_classifier(config, params(4), train, test, device=CPU, progress=lambda *_: None,
                              should_stop=lambda: False)
    assert result.final["accuracy_colour"] > 0.9 and result.final["top3_colour"] == 1.0, result.final
    assert result.model.features(torch.rand(2, 3, 16, 16)).shape == (2, config.feature_dim) == (2, 16)
    assert result.model.resize(torch.rand(2, 3, 16, 16)).shape[-1] == 8
    restored = classifier.from_checkpoint(classifier.to_checkpoint(result.model))
    x = torch.rand(3, 3, 16, 16)
    assert torch.equal(classifier.predict(restored, x)["colour"], classifier.predict(result.model, x)["colour"])


def test_colour_statistics_describe_the_product_pixels_only() -> None:
    white = torch.ones(1, 3, 8, 8)
    red = white.clone()
    red[:, :, 2:6, 2:6] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    stats = classifier.colour_statistics(torch.cat([white, red]))
    assert stats.shape == (2, classifier.COLOUR_STATS)
    assert stats[0].abs().sum() == 0  # nothing but background
    assert stats[1, -1] == pytest.approx(16 / 64) and torch.allclose(stats[1, -4:-1], torch.tensor([0.9, 0.1, 0.1]))
    assert stats[1, :-4].square().sum() == pytest.approx(1.0)  # the root of a histogram that sums to one


def test_temperature_scaling_calibrates_overconfident_logits() -> None:
    """Logits three times too sharp: the fitted temperature is about 3 and the ECE falls."""
    gen = torch.Generator().manual_seed(0)
    true_logits = torch.randn(4000, 5, generator=gen) * 1.5
    labels = torch.multinomial(true_logits.softmax(-1), 1, generator=gen)[:, 0]
    sharp = true_logits * 3
    t = fit_temperature(sharp, labels)
    assert t == pytest.approx(3.0, rel=0.15)
    assert expected_calibration_error(sharp, labels, t) < expected_calibration_error(sharp, labels) / 2


def test_calibrate_stores_temperatures_that_predict_uses() -> None:
    train, test = squares(256, 0), squares(128, 1)
    result = train_classifier(CONFIG, params(2), train, test, device=CPU, progress=lambda *_: None,
                              should_stop=lambda: False)
    model, report = calibrate(result.model, test, CPU)
    assert set(report) == {"row", "colour"} and report["row"]["images_fitted"] == 64
    assert all(k in report["colour"] for k in ("temperature", "ece_before", "ece_after"))
    restored = classifier.from_checkpoint(classifier.to_checkpoint(model))
    assert restored.config.temperatures == model.config.temperatures
    x = torch.from_numpy(test.images[:4]).permute(0, 3, 1, 2).float() / 255
    logits = restored(x)["colour"]
    expected = (logits / model.config.temperatures["colour"]).softmax(-1)
    assert torch.allclose(classifier.predict(restored, x)["colour"], expected, atol=1e-6)


def test_time_budget_stops_at_the_step_that_crosses_it_and_decays_the_rate() -> None:
    train, test = squares(256, 0), squares(64, 1)
    budget = TrainParams(epochs=50, batch_size=32, learning_rate=5e-3, seed=2, max_minutes=0.5 / 60)
    result = train_classifier(CONFIG, budget, train, test, device=CPU, progress=lambda *_: None,
                              should_stop=lambda: False)
    assert result.stopped_early and "time budget" in result.stopped_early
    assert 1 <= len(result.history) < 50 and "accuracy_row" in result.final
    nearly_spent = TimeBudget(1.0, [{"seconds": 59.9}])  # a resumed run nearly out of time after a few steps
    schedule = Schedule(1.0, total_steps=100, warmup_fraction=0.1, budget=nearly_spent)
    assert schedule.rate(20) < 0.01 and not Schedule(1.0, 100, 0.1, TimeBudget(None)).rate(20) < 0.9


def test_epoch_order_rebalances_by_a_power_of_the_class_counts() -> None:
    labels = np.array([0] * 900 + [1] * 100)
    split = ImageSplit(np.zeros((1000, 1, 1, 1), np.uint8), {"k": labels})
    share = {p: float((labels[epoch_order(split, np.random.default_rng(0), "k", p)] == 1).mean())
             for p in (0.0, 0.5, 1.0)}
    assert share[0.0] == pytest.approx(0.1) and share[0.5] == pytest.approx(0.25, abs=0.04)
    assert share[1.0] == pytest.approx(0.5, abs=0.05)


def test_the_balanced_reading_subtracts_the_training_prior() -> None:
    """Trained on 90 % top squares, the balanced reading raises the rare row's probability by exactly
    the prior ratio (logit adjustment), and the priors travel in the checkpoint."""
    rng = np.random.default_rng(0)
    row, colour = (rng.random(256) < 0.1).astype(np.int64), rng.integers(0, 3, 256)
    train = ImageSplit(draw_squares(row, colour, rng), {"row": row, "colour": colour.astype(np.int64)})
    model = train_classifier(CONFIG, params(1), train, squares(64, 1), device=CPU, progress=lambda *_: None,
                             should_stop=lambda: False).model
    priors = classifier.from_checkpoint(classifier.to_checkpoint(model)).config.log_priors
    assert np.exp(priors["row"]).sum() == pytest.approx(1.0, abs=1e-3) and priors["row"][0] > priors["row"][1]
    x = torch.from_numpy(squares(8, 2).images).permute(0, 3, 1, 2).float() / 255
    natural = classifier.predict_with_features(model, x)[0]["row"]
    balanced = classifier.predict_with_features(model, x, balanced=True)[0]["row"]
    odds = (balanced[:, 1] / balanced[:, 0]) / (natural[:, 1] / natural[:, 0])
    assert torch.allclose(odds, torch.tensor(float(np.exp(priors["row"][0] - priors["row"][1]))), rtol=1e-3)


def test_letterbox_margins_are_measured_and_cropped() -> None:
    """Portrait photos letterboxed on white into squares: the white side columns are found and the
    network sees the product's columns only; unframed or grey-scale images are not cropped."""
    images = np.full((50, 16, 16, 3), 255, dtype=np.uint8)
    images[:, :, 2:14] = np.random.default_rng(0).integers(0, 200, (50, 16, 12, 3))  # 2 white columns a side
    assert classifier.letterbox_width(images) == 0.75
    assert classifier.letterbox_width(np.zeros((5, 16, 16, 3), np.uint8)) == 1.0
    assert classifier.letterbox_width(np.zeros((5, 28, 28, 1), np.uint8)) == 1.0
    model = classifier.Classifier(replace(CONFIG, crop_width=0.75, input_size=8))
    x = torch.from_numpy(images[:2]).permute(0, 3, 1, 2).float() / 255
    assert model.resize(x).shape[-2:] == (8, 6)  # height 8, width 8 * 12 / 16


def test_flip_average_makes_inference_mirror_invariant() -> None:
    model = classifier.Classifier(replace(CONFIG, flip_average=True)).eval()
    x = torch.rand(3, 3, 16, 16)
    logits, features = model.infer(x)
    mirrored, mirrored_features = model.infer(x.flip(-1))
    assert torch.allclose(features, mirrored_features, atol=1e-5)
    assert all(torch.allclose(logits[k], mirrored[k], atol=1e-5) for k in logits)


def test_the_cpu_preset_reads_32_px_where_training_runs_in_fp32() -> None:
    # Without native bf16 an epoch at 40 px costs twice as much: the fp32 variant reads 32 px, with a
    # shorter training budget so the rest of the job still fits its 30 minutes.
    mixed, plain = classifier.preset_for("cpu"), classifier.preset_for("cpu", fp32=True)
    assert (mixed["model"]["input_size"], mixed["train"]["max_minutes"]) == (40, 25)
    assert (plain["model"]["input_size"], plain["train"]["max_minutes"]) == (32, 22)
    assert plain["model"]["width"] == mixed["model"]["width"] and plain["train"]["epochs"] == mixed["train"]["epochs"]
    assert classifier.preset_for("tiny", fp32=True) == classifier.PRESETS["tiny"]
    assert "fp32" not in classifier.PRESETS["gpu"]


def test_the_tensor_names_stored_checkpoints_use_are_kept() -> None:
    # Versions already in the registry were written with these names; a rename makes them unloadable.
    names = set(classifier.Classifier(replace(CONFIG, stages=2, blocks=2)).state_dict())
    assert {"stem.0.weight", "stem.1.running_var", "stages.0.conv1.weight", "stages.3.bn2.running_mean",
            "stages.2.shortcut.0.weight", "heads.colour.weight"} <= names
    assert not any(name.startswith("stages.4") for name in names)  # blocks numbered from 0 within `stages`

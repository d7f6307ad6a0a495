"""The domain classifier as plain functions: it learns two heads on images where the answer is
visible, its checkpoint round-trips, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support import whole_and_resumed
from worker.datasets.base import ImageSplit
from worker.models import classifier
from worker.training.classifier_trainer import augment, evaluate, train_classifier
from worker.training.common import TrainParams

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

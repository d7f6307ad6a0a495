"""Evaluation with the domain classifier on known inputs: real against real sits at the floor,
noise far above it; a sampler that draws the requested class adheres, one that ignores it does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_classifier import CONFIG, draw_squares, params, squares
from worker.evaluation import ClassifierFeatures, distances, evaluate_generator, to_float
from worker.training.classifier_trainer import train_classifier

CPU = torch.device("cpu")
VOCABULARY = {"row": ["top", "bottom"], "colour": ["red", "green", "blue"]}


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    return train_classifier(CONFIG, params(4), squares(384, 0), squares(128, 1), device=CPU,
                            progress=lambda *_: None, should_stop=lambda: False).model


def test_real_is_near_the_floor_and_noise_far_above(trained: torch.nn.Module) -> None:
    features = ClassifierFeatures(trained)
    a, b = to_float(squares(200, 5).images), to_float(squares(200, 6).images)
    real = distances(features, a, b, CPU)
    noise = distances(features, a, torch.rand_like(b), CPU)
    assert noise["fid"] > 10 * max(real["fid"], 1e-3), (real, noise)
    assert noise["kid"] > real["kid"] + 5 * noise["kid_std"]


def test_adherence_and_fid_of_a_faithful_and_a_careless_sampler(trained: torch.nn.Module) -> None:
    train, test = squares(256, 0), squares(200, 7)

    def faithful(cond: dict[str, int], seeds: list[int]) -> torch.Tensor:
        rng = np.random.default_rng(seeds)
        n = len(seeds)
        return to_float(draw_squares(np.full(n, cond["row"]), np.full(n, cond["colour"]), rng))

    def careless(cond: dict[str, int], seeds: list[int]) -> torch.Tensor:
        return faithful({"row": 0, "colour": 0}, seeds)  # always a red square on top

    good = evaluate_generator(faithful, trained, train, test, VOCABULARY, "row", max_images=200, seed=1, device=CPU)
    bad = evaluate_generator(careless, trained, train, test, VOCABULARY, "row", max_images=200, seed=1, device=CPU)
    assert good.adherence["row"] > 0.95 and good.adherence["colour"] > 0.95, good.public()
    assert bad.adherence["colour"] < 0.5 and bad.per_class["bottom"] < 0.05, bad.public()
    assert good.fid < bad.fid and good.fid < 5 * max(good.floor_fid, 0.05), (good.public(), bad.public())
    assert set(good.public()) >= {"fid", "kid", "floor", "adherence", "per_class_adherence"}

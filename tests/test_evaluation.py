"""Evaluation with the domain classifier on known inputs: real against real sits at the floor,
noise far above it; a sampler that draws the requested class adheres, one that ignores it does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_classifier import CONFIG, draw_squares, params, squares
from worker.evaluation import ClassifierFeatures, blind_judge, distances, diversity, evaluate_generator, to_float
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

    # the judge's own accuracy on the same real images, and adherence relative to it
    public = good.public()
    assert good.real_accuracy["row"] > 0.95 and set(public["relative_per_class_adherence"]) == {"top", "bottom"}
    assert all(0.9 < v < 1.1 for v in public["relative_per_class_adherence"].values()), public


def test_a_blind_judge_gives_no_fid_verdict(trained: torch.nn.Module) -> None:
    train, test = squares(256, 0), squares(100, 7)

    def sampler(cond: dict[str, int], seeds: list[int]) -> torch.Tensor:
        return to_float(draw_squares(np.full(len(seeds), cond["row"]), np.full(len(seeds), cond["colour"]),
                                     np.random.default_rng(seeds)))

    result = evaluate_generator(sampler, trained, train, test, VOCABULARY, "row", max_images=100, seed=1, device=CPU)
    assert blind_judge(result, 0.99, 0.6) is None
    assert "below 0.6" in blind_judge(result, 0.3, 0.6)
    collapsed = type(result)(**{**result.__dict__, "floor_fid": 0.0})
    assert "degenerate" in blind_judge(collapsed, 0.99, 0.6)


def test_diversity_is_near_one_for_varied_samples_and_near_zero_for_a_collapsed_sampler(
        trained: torch.nn.Module) -> None:
    train = squares(384, 0)

    def varied(cond: dict[str, int], seeds: list[int]) -> torch.Tensor:  # a fresh square per seed, as real ones
        return to_float(draw_squares(np.full(len(seeds), cond["row"]), np.full(len(seeds), cond["colour"]),
                                     np.random.default_rng(seeds)))

    def collapsed(cond: dict[str, int], seeds: list[int]) -> torch.Tensor:  # every seed the same image
        return varied(cond, [seeds[0]]).repeat(len(seeds), 1, 1, 1)

    spread, per_condition = diversity(varied, trained, train, VOCABULARY, CPU, seed=3)
    # six condition sets (colour x row), labelled by their values in name order
    assert 0.6 < spread < 1.6 and len(per_condition) == 6 and "red / top" in per_condition, per_condition
    none, _ = diversity(collapsed, trained, train, VOCABULARY, CPU, seed=3)
    assert none < 0.05

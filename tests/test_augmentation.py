"""Nearest real items and the augmentation gate as plain functions, with a small classifier trained
on real Fashion-MNIST images: a real image finds itself first, copies of training images are
rejected as near-duplicates, candidates of another class as low-confidence, and the rare-class
policy asks for what the settings say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_classifier import CPU, squares
from worker.augmentation import (
    LOW_CONFIDENCE,
    NEAR_DUPLICATE,
    GateRule,
    RarePolicy,
    class_seed,
    csv_safe,
    judge,
    slug,
    unique_slugs,
)
from worker.datasets import fashion_mnist
from worker.datasets.base import ImageDataset, ImageSplit
from worker.feature_index import PRECISION, QUANTILES, FeatureIndex, build_index, embed
from worker.models.classifier import Classifier, ClassifierConfig
from worker.training.classifier_trainer import inverse_frequency, train_classifier
from worker.training.common import TrainParams, epoch_order

CONFIG = ClassifierConfig(image_size=28, channels=1, conditions={"class": 10}, width=8, blocks=1, dropout=0.0)


@pytest.fixture(scope="module")
def trained(fashion_mnist_available: Path) -> tuple:
    """A small classifier on 3,000 real Fashion-MNIST images and the index of those and 600 held out."""
    full = fashion_mnist.load_folder(fashion_mnist.locate(fashion_mnist_available, allow_download=False,
                                                          cache_dir=fashion_mnist_available))
    train = full.train.stratified_head(3000, "class")
    train = ImageSplit(train.images, train.conditions, np.array([f"item-{i}" for i in range(len(train))]))
    dataset = ImageDataset("fashion-mnist", train, full.test.head(600), full.vocabulary, full.roles)
    params = TrainParams(epochs=3, batch_size=64, learning_rate=3e-3, seed=0)  # ~70 % held-out accuracy
    model = train_classifier(CONFIG, params, train, dataset.test, device=CPU, progress=lambda *_: None,
                             should_stop=lambda: False).model
    titles = {f"item-{i}": f"product {i}" for i in range(len(train))}
    return model, dataset, build_index(model, dataset, titles, CPU)


def features(model: Classifier, images: np.ndarray) -> np.ndarray:
    return embed(model, images, CPU)


def test_a_real_image_finds_itself_first(trained: tuple) -> None:
    model, dataset, index = trained
    assert len(index) == len(dataset.train) + len(dataset.test)
    rows = [0, 17, 2999]
    nearest = index.nearest(features(model, dataset.train.images[rows]), k=5)
    for row, found in zip(rows, nearest, strict=True):
        assert len(found) == 5
        assert found[0].id == f"item-{row}" and found[0].title == f"product {row}" and found[0].split == "train"
        assert found[0].similarity == pytest.approx(1.0, abs=1e-3) and found[0].similarity > found[1].similarity
        assert [n.similarity for n in found] == sorted((n.similarity for n in found), reverse=True)
    # held-out items have no catalog id here: named by split and row, titled by their type
    first = index.nearest(features(model, dataset.test.images[:1]), k=1)[0][0]
    assert first.id == "test-000000" and first.title == dataset.vocabulary["class"][dataset.test.conditions["class"][0]]


def test_index_round_trips_through_storage_bytes(trained: tuple) -> None:
    model, dataset, index = trained
    loaded = FeatureIndex.from_npz(index.to_npz())
    queries = features(model, dataset.test.images[:16])
    assert np.array_equal(loaded.search(queries, 5)[1], index.search(queries, 5)[1])
    assert loaded.real_nn_distance == index.real_nn_distance
    # held-out real items' distances to their nearest training item, by quantile, increase
    values = [index.real_nn_distance[str(q)] for q in QUANTILES]
    assert values == sorted(values) and values[0] > PRECISION
    assert index.distance_at(0.01) == values[1] and index.distance_at(0.0) == values[0]


def test_gate_rejects_copies_and_unconvincing_candidates(trained: tuple) -> None:
    model, dataset, index = trained
    n = 100
    fresh = dataset.test.images[:n]  # real items the index has not seen as training images
    labels = dataset.test.conditions["class"][:n]
    copies = dataset.train.images[:n]  # training images resubmitted as "synthetic"
    images = np.concatenate([fresh, copies, fresh])
    wrong = (labels + 1 + np.arange(n) % 9) % 10  # the same real items, asked to be another class
    target = {"class": np.concatenate([labels, dataset.train.conditions["class"][:n], wrong])}
    rule = GateRule(min_confidence=0.4, min_distance=index.distance_at(0.01))
    verdict = judge(images, target, "class", model, index, rule, CPU)
    reasons = np.array([r or "kept" for r in verdict.reasons])
    assert (reasons[n:2 * n] == NEAR_DUPLICATE).all()
    assert (reasons[2 * n:] == LOW_CONFIDENCE).mean() >= 0.9  # a few of these count as near-duplicates first
    kept = (reasons[:n] == "kept").mean()
    assert 0.4 <= kept <= 0.99, reasons[:n]  # the confident ones pass; about 1 % are as close as copies
    assert verdict.kept.sum() == (reasons == "kept").sum()
    assert verdict.nearest_id[n] == "item-0" and verdict.distance[n] < PRECISION
    # a stricter confidence threshold keeps fewer
    strict = judge(images, target, "class", model, index, GateRule(0.8, rule.min_distance), CPU)
    assert strict.kept.sum() < verdict.kept.sum()


def test_rare_classes_by_count_or_share_of_the_median() -> None:
    counts = {"Tshirts": 900, "Shirts": 800, "Jeans": 700, "Jumpsuit": 15, "Rompers": 11, "Capris": 90, "Empty": 0}
    by_count = RarePolicy(min_count=100, median_share=0.0, max_per_class=1000)
    assert by_count.rare(counts) == {"Rompers": 89, "Jumpsuit": 85, "Capris": 10}  # rarest first; empty left out
    by_share = RarePolicy(min_count=0, median_share=0.1, max_per_class=1000)  # median 90 -> 9: none below
    assert by_share.rare(counts) == {}
    both = RarePolicy(min_count=20, median_share=0.5, max_per_class=30)  # target max(20, 45) = 45, capped at 30
    assert both.rare(counts) == {"Rompers": 30, "Jumpsuit": 30}


def test_seeds_and_paths_are_stable() -> None:
    assert class_seed("catalog", "2026-11-24", "Jumpsuit") == class_seed("catalog", "2026-11-24", "Jumpsuit")
    assert class_seed("catalog", "2026-11-24", "Jumpsuit") != class_seed("catalog", "2026-11-25", "Jumpsuit")
    assert 0 <= class_seed("catalog", "2026-11-24", "Rompers") < 2**30
    assert slug("Night suits") == "night-suits" and slug("T-shirt/top") == "t-shirt-top" and slug("???") == "class"


def test_balancing_options_of_the_classifier_trainer() -> None:
    split = squares(300, 3)
    labels = split.conditions["colour"]
    keep = np.flatnonzero((labels != 2) | (np.arange(300) % 10 == 0))  # blue becomes rare
    rare = split.take(keep)
    counts = np.bincount(rare.conditions["colour"], minlength=3)
    rng = np.random.default_rng(0)
    drawn = rare.conditions["colour"][np.concatenate([epoch_order(rare, rng, "colour") for _ in range(20)])]
    shares = np.bincount(drawn, minlength=3) / len(drawn)
    assert np.allclose(shares, 1 / 3, atol=0.03) and counts[2] < counts[0] / 5
    weights = inverse_frequency(rare, "colour", 3, CPU)
    assert weights[2] > 5 * weights[0]
    assert float((weights * torch.tensor(counts, dtype=torch.float32)).sum()) == pytest.approx(len(rare), rel=1e-5)
    assert sorted(epoch_order(rare, np.random.default_rng(0))) == list(range(len(rare)))


def test_classes_that_slug_alike_get_their_own_paths() -> None:
    slugs = unique_slugs(["Jeans", "jeans", "jeans!", "Tshirts"])
    assert slugs["Tshirts"] == "tshirts"  # no collision: the readable form
    assert len({slugs["Jeans"], slugs["jeans"], slugs["jeans!"]}) == 3
    assert all(slugs[n].startswith("jeans-") for n in ("Jeans", "jeans", "jeans!"))
    assert unique_slugs(["jeans", "Jeans"]) == {k: v for k, v in slugs.items() if k in ("jeans", "Jeans")}


@pytest.mark.parametrize("cell", ["=HYPERLINK(\"http://evil\")", "+1+2", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_manifest_cells_never_start_a_formula(cell: str) -> None:
    assert csv_safe(cell) == "'" + cell
    assert csv_safe("Navy Blue") == "Navy Blue" and csv_safe(-0.5) == -0.5 and csv_safe(None) is None

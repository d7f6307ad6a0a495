"""Does the nightly augmentation help? Train a classifier (a) as is, (b) with class weighting, (c)
with oversampling, (d) with the gate's synthetic images added, over several seeds; report
minority-class recall and overall accuracy on the real test set; (e) oversampling with the synthetic
images added.

    .venv/bin/python -m bench.augment_eval --dataset fashion-mnist [--seeds 3] [--record]
    .venv/bin/python -m bench.augment_eval --dataset catalog --generator cgan@v2 [--cap 150]

fashion-mnist: three classes cut to 1-5 % of their size (a fixed cut); the generator (cgan, cpu
preset widths, `--gen-epochs`) is trained on the cut data, as the service's would be on a catalog
whose rare classes are rare, and cached under var/bench/. Also the Classification Accuracy Score
(CAS): a classifier trained on synthetic images only, tested on real ones, against the same
classifier trained on the real (cut) data.
catalog: the demo catalog's real rare classes (the `augment` defaults: fewer than 50 images or 10 %
of the median), the generator an existing version from the local store; common classes are capped
at `--cap` images so a classifier trains in about a minute on 2 cores.

The gate's classifier is trained on the same training set with balanced sampling (as the service's
`classifier` is); synthetic images pass the same gate as the `augment` job
(worker/augmentation.py). The seeds vary the classifiers, not the data.
`--record` (fashion-mnist) writes each cut class's verdict — does the better of (d) and (e) beat (a),
(b) and (c) on its recall without costing more than 0.5 points of accuracy — to `augmented/<dataset>/verdicts.json`
in the local store, where the `augment` job reads it. Prints markdown tables; the raw figures go to
var/bench/augment_eval_<dataset>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
import torch

from worker.augmentation import GateRule, RarePolicy, judge
from worker.datasets import fashion_mnist
from worker.datasets.base import ImageDataset, ImageSplit
from worker.feature_index import FeatureIndex, build_index
from worker.images import to_uint8
from worker.models import cgan, classifier
from worker.training.cgan_trainer import train_cgan
from worker.training.classifier_trainer import Recipe, inverse_frequency, per_class_accuracy, train_classifier
from worker.training.common import TrainParams

CUT = {"Pullover": 0.01, "Sandal": 0.02, "Bag": 0.05}
SETUPS = {"a": "a: as is", "b": "b: class weights", "c": "c: oversampling", "d": "d: + synthetic",
          "e": "e: oversampling + synthetic"}
WITH_SYNTHETIC = "de"
Draw = Callable[[int, list[int]], np.ndarray]  # (class index, seeds) -> uint8 [n, H, W, C]


@dataclass
class Experiment:
    dataset: ImageDataset  # the training set as the classifiers see it, and the real test set
    condition: str  # the class condition the classifiers learn
    minority: list[str]  # classes whose recall is reported
    requested: dict[str, int]  # rare class -> synthetic images wanted
    draw: Draw
    note: str

    @property
    def names(self) -> list[str]:
        return self.dataset.vocabulary[self.condition]

    def counts(self) -> dict[str, int]:
        labels = self.dataset.train.conditions[self.condition]
        return {n: int((labels == i).sum()) for i, n in enumerate(self.names)}


def quiet(*_: object) -> None:
    return None


def cut_classes(split: ImageSplit, names: list[str], condition: str, cut: dict[str, float], seed: int) -> ImageSplit:
    """Keep `fraction` of each named class (a random subset), every other class whole."""
    rng = np.random.default_rng(seed)
    keep = np.ones(len(split), dtype=bool)
    labels = split.conditions[condition]
    for name, fraction in cut.items():
        rows = np.flatnonzero(labels == names.index(name))
        keep[rng.permutation(rows)[max(1, round(len(rows) * fraction)):]] = False
    return split.take(np.flatnonzero(keep))


def cap_classes(split: ImageSplit, condition: str, cap: int, seed: int) -> ImageSplit:
    """At most `cap` random images of each class."""
    rng = np.random.default_rng(seed)
    labels = split.conditions[condition]
    keep = [rng.permutation(np.flatnonzero(labels == v))[:cap] for v in np.unique(labels)]
    return split.take(np.sort(np.concatenate(keep)))


def fashion_mnist_experiment(args: argparse.Namespace, device: torch.device) -> Experiment:
    full = fashion_mnist.load_folder(fashion_mnist.locate(args.datasets, allow_download=False,
                                                          cache_dir=args.var / "cache"))
    names = full.vocabulary["class"]
    train = cut_classes(full.train, names, "class", CUT, seed=0).stratified_head(args.subset, "class")
    path = args.var / "bench" / f"augment_eval_cgan_e{args.gen_epochs}_n{len(train)}.pt"
    if path.exists():  # the generator is the slow part: trained once per cut
        generator = cgan.from_checkpoint(torch.load(path, weights_only=True)).to(device)
    else:
        t = time.time()
        config = replace(cgan.CGANConfig(image_size=28, channels=1, conditions={"class": 10}),
                         **cgan.PRESETS["cpu"]["model"])
        params = TrainParams(epochs=args.gen_epochs, batch_size=64, learning_rate=2e-4, seed=0, max_eval_examples=512)
        generator = train_cgan(config, params, train, full.test, device=device, progress=quiet,
                               should_stop=lambda: False).model
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(cgan.to_checkpoint(generator), path)
        print(f"generator: {args.gen_epochs} epochs in {time.time() - t:.0f} s", flush=True)

    def draw(value: int, seeds: list[int]) -> np.ndarray:
        return to_uint8(cgan.sample(generator, {"class": value}, seeds, device=device))

    dataset = ImageDataset("fashion-mnist", train, full.test, full.vocabulary, full.roles)
    exp = Experiment(dataset, "class", list(CUT), {}, draw,
                     f"Fashion-MNIST, {', '.join(f'{n} cut to {f:.0%}' for n, f in CUT.items())}; "
                     f"generator cgan ({args.gen_epochs} epochs, cpu widths) trained on the cut data")
    exp.requested = RarePolicy(min_count=0, median_share=args.median_share, max_per_class=10_000).rare(exp.counts())
    return exp


def catalog_experiment(args: argparse.Namespace, device: torch.device) -> Experiment:
    from bench.local import load_version, local_storage
    from shared.settings import Settings
    from worker.datasets.store import load_dataset

    storage = local_storage(args.var)
    full = load_dataset("catalog", storage, Settings.from_env(), quiet)
    kind, colour = full.roles["type"], full.roles["colour"]
    train = cap_classes(full.train, kind, args.cap, seed=0)
    generator, meta = load_version(storage, args.generator, str(device))
    assert meta["dataset"] == "catalog" and meta["vocabulary"] == full.vocabulary, "the generator must be a catalog one"
    # colours drawn as each class's real items have them (as the augment job does)
    shares = [np.bincount(full.train.conditions[colour][full.train.conditions[kind] == v],
                          minlength=len(full.vocabulary[colour])) for v in range(len(full.vocabulary[kind]))]

    def draw(value: int, seeds: list[int]) -> np.ndarray:
        p = shares[value] / shares[value].sum()
        colours = np.array([np.random.default_rng(s).choice(len(p), p=p) for s in seeds])
        out = np.zeros((len(seeds), 64, 64, 3), np.uint8)
        for c in np.unique(colours):
            rows = np.flatnonzero(colours == c)
            out[rows] = to_uint8(cgan.sample(generator, {kind: value, colour: int(c)}, [seeds[r] for r in rows],
                                             device=device))
        return out

    dataset = ImageDataset("catalog", train, full.test, {kind: full.vocabulary[kind]}, full.roles)
    exp = Experiment(dataset, kind, [], {}, draw,
                     f"demo catalog, {len(full.vocabulary[kind])} types, common types capped at {args.cap} images; "
                     f"generator {args.generator}")
    counts = {n: c for n, c in exp.counts().items() if c > 0}
    exp.requested = RarePolicy(min_count=50, median_share=0.1, max_per_class=100).rare(counts)
    exp.minority = sorted(exp.requested, key=lambda n: counts[n])
    return exp


# The recipe these setups were first measured with (plain cross-entropy, fully balanced oversampling),
# kept so that the setups stay comparable across runs; the service's classifier has its own.
REFERENCE_RECIPE = Recipe(label_smoothing=0.0, warmup_fraction=0.0, weight_decay=1e-4, balance_power=1.0)


def classifier_config(exp: Experiment, width: int) -> classifier.ClassifierConfig:
    return classifier.ClassifierConfig(image_size=exp.dataset.image_size, channels=exp.dataset.channels,
                                       conditions={exp.condition: len(exp.names)}, width=width, blocks=1)


def fit(exp: Experiment, train: ImageSplit, seed: int, args: argparse.Namespace, device: torch.device,
        **options: object) -> classifier.Classifier:
    params = TrainParams(epochs=args.clf_epochs, batch_size=128, learning_rate=2e-3, seed=seed, max_eval_examples=500)
    return train_classifier(classifier_config(exp, args.width), params, train, exp.dataset.test, device=device,
                            progress=quiet, should_stop=lambda: False, stratify_by=exp.condition,
                            recipe=REFERENCE_RECIPE, **options).model


@torch.no_grad()
def scores(model: classifier.Classifier, exp: Experiment, device: torch.device) -> dict:
    test = exp.dataset.test
    recall = per_class_accuracy(model, test, exp.condition, exp.names, device)
    counts = np.bincount(test.conditions[exp.condition], minlength=len(exp.names))
    correct = sum(recall[n] * counts[i] for i, n in enumerate(exp.names) if n in recall)
    return {"accuracy": float(correct / len(test)), "recall": recall}


def synthesize(exp: Experiment, gate_model: classifier.Classifier, index: FeatureIndex, rule: GateRule,
               device: torch.device, attempts: int = 4) -> tuple[ImageSplit, dict]:
    """The gate's synthetic images for each rare class, and a per-class summary."""
    images, labels, summary = [], [], {}
    for name, wanted in exp.requested.items():
        value, kept, generated, rejected = exp.names.index(name), [], 0, {}
        base = 10_000 * (value + 1)
        while len(kept) < wanted and generated < attempts * wanted:
            batch = exp.draw(value, list(range(base + generated, base + generated + 256)))
            verdict = judge(batch, {exp.condition: np.full(len(batch), value)}, exp.condition, gate_model, index,
                            rule, device)
            for reason in filter(None, verdict.reasons):
                rejected[reason] = rejected.get(reason, 0) + 1
            kept.extend(batch[verdict.kept])
            generated += len(batch)
        kept = kept[:wanted]
        summary[name] = {"requested": wanted, "generated": generated, "kept": len(kept), "rejected": rejected}
        images.extend(kept)
        labels.extend([value] * len(kept))
    shape = exp.dataset.train.images.shape[1:]
    split = ImageSplit(np.stack(images) if images else np.zeros((0, *shape), np.uint8),
                       {exp.condition: np.array(labels, dtype=np.int64)})
    return split, {"classes": summary, "min_distance": rule.min_distance, "index_quantiles": index.real_nn_distance}


def balanced_synthetic(exp: Experiment, per_class: int) -> ImageSplit:
    """CAS training set: per_class generated images of every class, no gate."""
    images = [exp.draw(v, list(range(1_000_000 + v * per_class, 1_000_000 + (v + 1) * per_class)))
              for v in range(len(exp.names))]
    labels = [np.full(per_class, v, dtype=np.int64) for v in range(len(exp.names))]
    return ImageSplit(np.concatenate(images), {exp.condition: np.concatenate(labels)})


@torch.no_grad()
def generator_adherence(exp: Experiment, judge_model: classifier.Classifier, per_class: int,
                        device: torch.device) -> dict[str, float]:
    """Per class: the share of `per_class` ungated generated images the classifier assigns to it."""
    return per_class_accuracy(judge_model, balanced_synthetic(exp, per_class), exp.condition, exp.names, device)


def pct(values: list[float]) -> str:
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def report(exp: Experiment, results: dict[str, list[dict]], shown: list[str]) -> None:
    print("| setup | " + " | ".join(f"{n} recall" for n in shown) + " | minority mean recall | overall accuracy |")
    print("|---" * (len(shown) + 3) + "|")
    for setup, rows in results.items():
        minority = [float(np.mean([r["recall"][n] for n in exp.minority if n in r["recall"]])) for r in rows]
        print(f"| {setup} | " + " | ".join(pct([r["recall"][n] for r in rows]) for n in shown)
              + f" | {pct(minority)} | {pct([r['accuracy'] for r in rows])} |")


def verdicts_of(exp: Experiment, results: dict[str, list[dict]]) -> dict[str, dict]:
    """Per minority class: does the better of (d), (e) beat (a), (b) and (c) on its recall, at most 0.5
    points of accuracy lost against (a)."""
    def mean(setup: str, key: Callable[[dict], float]) -> float:
        return float(np.mean([key(r) for r in results[setup]]))

    synthetic = [s for k, s in SETUPS.items() if k in WITH_SYNTHETIC and s in results]
    without = [s for k, s in SETUPS.items() if k not in WITH_SYNTHETIC and s in results]
    out = {}
    for name in exp.minority:
        best = max(synthetic, key=lambda s, n=name: mean(s, lambda r: r["recall"][n]))
        with_synthetic = mean(best, lambda r, n=name: r["recall"][n])
        best_other = max(mean(s, lambda r, n=name: r["recall"][n]) for s in without)
        drop = mean(SETUPS["a"], lambda r: r["accuracy"]) - mean(best, lambda r: r["accuracy"])
        out[name] = {"helps": bool(with_synthetic > best_other and drop <= 0.005), "best_with": best,
                     "recall_with_synthetic": round(with_synthetic, 4), "best_without": round(best_other, 4),
                     "accuracy_drop": round(drop, 4)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("fashion-mnist", "catalog"), default="fashion-mnist")
    parser.add_argument("--datasets", type=Path, default=Path(os.environ.get("ATELIER_DATASETS", "../shared/datasets")))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--gen-epochs", type=int, default=6, help="fashion-mnist: generator epochs")
    parser.add_argument("--generator", default="cgan@v2", help="catalog: the generator version in the local store")
    parser.add_argument("--cap", type=int, default=150, help="catalog: images per common type")
    parser.add_argument("--clf-epochs", type=int, default=3)
    parser.add_argument("--width", type=int, default=16, help="classifier width (blocks=1)")
    parser.add_argument("--median-share", type=float, default=0.1, help="fashion-mnist: rare below this share of the "
                                                                        "median")
    parser.add_argument("--tau", type=float, default=0.8, help="gate: minimum classifier confidence")
    parser.add_argument("--quantile", type=float, default=0.01, help="gate: near-duplicate distance quantile")
    parser.add_argument("--cas-per-class", type=int, default=1000, help="fashion-mnist: CAS training images per class")
    parser.add_argument("--subset", type=int, default=None, help="a stratified subset of the training set (smoke runs)")
    parser.add_argument("--var", type=Path, default=Path("var"))
    parser.add_argument("--setups", default="abcde", help="which of the setups a-e to train")
    parser.add_argument("--adherence-per-class", type=int, default=200, help="generated images per class judged")
    parser.add_argument("--adherence-only", action="store_true", help="stop after the generator's adherence")
    parser.add_argument("--record", action="store_true", help="write per-class verdicts to the local store")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    started = time.time()

    exp = (fashion_mnist_experiment if args.dataset == "fashion-mnist" else catalog_experiment)(args, device)
    counts = exp.counts()
    print(f"{exp.note}\n{len(exp.dataset.train)} training images; rare: "
          f"{ {n: counts[n] for n in exp.requested} }", flush=True)

    # The judge is trained with balanced sampling, as the service's classifier is: trained as is on
    # the same imbalanced data it gives rare classes too little probability to pass any gate.
    gate_model = fit(exp, exp.dataset.train, 1000, args, device, oversample_by=exp.condition)
    index = build_index(gate_model, exp.dataset, {}, device)
    rule = GateRule(args.tau, index.distance_at(args.quantile))
    # how faithfully the generator draws each class, judged by the gate's classifier
    adherence = generator_adherence(exp, gate_model, args.adherence_per_class, device)
    shown_adherence = adherence if len(adherence) <= 10 else {n: adherence[n] for n in exp.minority[:5]}
    print("generator adherence: " + ", ".join(f"{n} {a:.1%}" for n, a in shown_adherence.items())
          + f"; mean over classes {np.mean(list(adherence.values())):.1%}", flush=True)
    if args.adherence_only:
        return
    synthetic, gate = synthesize(exp, gate_model, index, rule, device)
    print(f"gate (τ {rule.min_confidence}, δ {rule.min_distance:.4f}): {json.dumps(gate['classes'])}", flush=True)

    results: dict[str, list[dict]] = {SETUPS[k]: [] for k in args.setups}
    train = exp.dataset.train
    weights = {exp.condition: inverse_frequency(train, exp.condition, len(exp.names), device)}
    options = {"b": {"class_weights": weights}, "c": {"oversample_by": exp.condition},
               "e": {"oversample_by": exp.condition}}
    for seed in range(args.seeds):
        for key in args.setups:
            data = train.concat(synthetic) if key in WITH_SYNTHETIC else train
            results[SETUPS[key]].append(scores(fit(exp, data, seed, args, device, **options.get(key, {})), exp, device))
        print(f"seed {seed}: " + ", ".join(f"{s[:1]} {r[-1]['accuracy']:.3f}" for s, r in results.items()), flush=True)

    shown = exp.minority if len(exp.minority) <= 4 else exp.minority[:3]
    print(f"\n{len(train)} training images; {len(synthetic)} synthetic kept of {sum(exp.requested.values())} "
          f"requested; {len(exp.minority)} minority classes; {args.seeds} seeds, mean ± std (%)\n")
    report(exp, results, shown)
    cas: list[dict] = []
    if args.dataset == "fashion-mnist" and "a" in args.setups:
        cas_train = balanced_synthetic(exp, args.cas_per_class)
        cas = [scores(fit(exp, cas_train, seed, args, device), exp, device) for seed in range(args.seeds)]
        cas_acc, real_acc = [r["accuracy"] for r in cas], [r["accuracy"] for r in results[SETUPS["a"]]]
        print(f"\nCAS (synthetic only, {args.cas_per_class}/class, no gate): {pct(cas_acc)} vs real (cut) "
              f"{pct(real_acc)}: {np.mean(cas_acc) / np.mean(real_acc):.1%} of real")
    verdicts = verdicts_of(exp, results) if set("abcd") <= set(args.setups) else {}
    helped = [n for n, v in verdicts.items() if v["helps"]]
    if verdicts:
        print(f"\nsynthetic data helps (d or e beats a, b and c on recall, ≤ 0.5 pt accuracy lost): {len(helped)} "
              f"of {len(verdicts)} minority classes" + (f": {', '.join(helped)}" if len(helped) <= 5 else ""))
    elapsed = time.time() - started
    print(f"\n{platform.node()} ({os.cpu_count()} cores, {device}), {date.today()}, {elapsed / 60:.1f} min")
    suffix = "" if args.setups == "abcde" else f"_{args.setups}"
    out = args.var / "bench" / f"augment_eval_{args.dataset}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"note": exp.note, "counts": counts, "gate": gate, "adherence": adherence,
                               "results": results, "cas": cas,
                               "verdicts": verdicts, "args": {k: str(v) for k, v in vars(args).items()},
                               "elapsed_s": elapsed}, indent=1))
    if args.record and args.dataset == "fashion-mnist" and verdicts:
        from bench.local import local_storage

        local_storage(args.var).put_json("augmented/fashion-mnist/verdicts.json", {
            "measured_by": "bench/augment_eval.py", "date": str(date.today()), "classes": verdicts})


if __name__ == "__main__":
    main()

"""Does the nightly augmentation help? Fashion-MNIST with a few classes cut to 1-5 % of their size:
train the classifier (a) as is, (b) with class weighting, (c) with oversampling, (d) with the gate's
synthetic images added, over several seeds; report minority-class recall and overall accuracy on
the real test set. Also the Classification Accuracy Score (CAS): a classifier trained on synthetic
images only, tested on real ones, against the same classifier trained on the real (cut) data.

    .venv/bin/python -m bench.augment_eval [--seeds 3] [--gen-epochs 6] [--clf-epochs 3] [--record]

The generator (cgan, cpu preset widths) and the gate's classifier are trained on the cut data, as
the service's would be on a catalog whose rare classes are rare; the cut is fixed (seed 0) and the
seeds vary the classifiers. Synthetic images pass the same gate as the `augment` job
(worker/augmentation.py). `--record` writes each class's verdict (does (d) beat (a), (b) and (c) on
its recall without costing more than 0.5 points of accuracy) to `augmented/<dataset>/verdicts.json`
in the local store, where the `augment` job reads it. Prints a markdown table and writes the raw
figures to var/bench/augment_eval.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import torch

from worker.augmentation import GateRule, RarePolicy, judge
from worker.datasets import fashion_mnist
from worker.datasets.base import ImageDataset, ImageSplit
from worker.feature_index import FeatureIndex, build_index
from worker.models import cgan, classifier
from worker.training.cgan_trainer import train_cgan
from worker.training.classifier_trainer import inverse_frequency, train_classifier
from worker.training.common import TrainParams, batches

CUT = {"Pullover": 0.01, "Sandal": 0.02, "Bag": 0.05}
CONDITION = "class"
SETUPS = ("a: as is", "b: class weights", "c: oversampling", "d: + synthetic")


def quiet(*_: object) -> None:
    return None


def cut_classes(split: ImageSplit, names: list[str], cut: dict[str, float], seed: int) -> ImageSplit:
    """Keep `fraction` of each named class (a random subset), every other class whole."""
    rng = np.random.default_rng(seed)
    keep = np.ones(len(split), dtype=bool)
    labels = split.conditions[CONDITION]
    for name, fraction in cut.items():
        rows = np.flatnonzero(labels == names.index(name))
        dropped = rng.permutation(rows)[max(1, round(len(rows) * fraction)):]
        keep[dropped] = False
    return split.take(np.flatnonzero(keep))


def classifier_config(width: int) -> classifier.ClassifierConfig:
    return classifier.ClassifierConfig(image_size=28, channels=1, conditions={CONDITION: 10}, width=width, blocks=1)


def fit(train: ImageSplit, test: ImageSplit, seed: int, epochs: int, width: int, device: torch.device,
        **options: object) -> classifier.Classifier:
    params = TrainParams(epochs=epochs, batch_size=128, learning_rate=2e-3, seed=seed, max_eval_examples=1000)
    return train_classifier(classifier_config(width), params, train, test, device=device, progress=quiet,
                            should_stop=lambda: False, **options).model


@torch.no_grad()
def scores(model: classifier.Classifier, test: ImageSplit, names: list[str], device: torch.device) -> dict:
    model.eval()
    predicted = np.concatenate([model(x)[CONDITION].argmax(-1).cpu().numpy() for x, _ in batches(test, 512, device)])
    truth = test.conditions[CONDITION]
    return {"accuracy": float((predicted == truth).mean()),
            "recall": {name: float((predicted[truth == i] == i).mean()) for i, name in enumerate(names)}}


def synthesize(generator: cgan.CGAN, gate_model: classifier.Classifier, index: FeatureIndex, names: list[str],
               requested: dict[str, int], rule: GateRule, device: torch.device, attempts: int = 4) -> tuple[
                   ImageSplit, dict]:
    """The gate's synthetic images for each rare class, and a per-class summary."""
    images, labels, summary = [], [], {}
    for name, wanted in requested.items():
        value, kept, generated, rejected, seed = names.index(name), [], 0, {}, 10_000 * (names.index(name) + 1)
        while len(kept) < wanted and generated < attempts * wanted:
            seeds = list(range(seed + generated, seed + generated + 256))
            batch = (cgan.sample(generator, {CONDITION: value}, seeds, device=device) * 255).round().byte()
            batch = batch.permute(0, 2, 3, 1).numpy()
            verdict = judge(batch, {CONDITION: np.full(len(batch), value)}, CONDITION, gate_model, index, rule, device)
            for reason in verdict.reasons:
                if reason:
                    rejected[reason] = rejected.get(reason, 0) + 1
            kept.extend(batch[verdict.kept])
            generated += len(batch)
        kept = kept[:wanted]
        summary[name] = {"requested": wanted, "generated": generated, "kept": len(kept), "rejected": rejected}
        images.extend(kept)
        labels.extend([value] * len(kept))
    split = ImageSplit(np.stack(images) if images else np.zeros((0, 28, 28, 1), np.uint8),
                       {CONDITION: np.array(labels, dtype=np.int64)})
    return split, {"classes": summary, "min_distance": rule.min_distance, "index_quantiles": index.real_nn_distance}


def balanced_synthetic(generator: cgan.CGAN, classes: int, per_class: int, device: torch.device) -> ImageSplit:
    """CAS training set: per_class generated images of every class, no gate."""
    images, labels = [], []
    for value in range(classes):
        seeds = list(range(1_000_000 + value * per_class, 1_000_000 + (value + 1) * per_class))
        batch = (cgan.sample(generator, {CONDITION: value}, seeds, device=device) * 255).round().byte()
        images.append(batch.permute(0, 2, 3, 1).numpy())
        labels.append(np.full(per_class, value, dtype=np.int64))
    return ImageSplit(np.concatenate(images), {CONDITION: np.concatenate(labels)})


def mean_std(values: list[float]) -> str:
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=Path(os.environ.get("ATELIER_DATASETS", "../shared/datasets")))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--gen-epochs", type=int, default=6)
    parser.add_argument("--clf-epochs", type=int, default=3)
    parser.add_argument("--width", type=int, default=16, help="classifier width (blocks=1)")
    parser.add_argument("--median-share", type=float, default=0.1, help="rare below this share of the median")
    parser.add_argument("--tau", type=float, default=0.8, help="gate: minimum classifier confidence")
    parser.add_argument("--quantile", type=float, default=0.01, help="gate: near-duplicate distance quantile")
    parser.add_argument("--cas-per-class", type=int, default=1000)
    parser.add_argument("--subset", type=int, default=None, help="a stratified subset of the training set (smoke runs)")
    parser.add_argument("--var", type=Path, default=Path("var"))
    parser.add_argument("--record", action="store_true", help="write per-class verdicts to the local store")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    started = time.time()

    folder = fashion_mnist.locate(args.datasets, allow_download=False, cache_dir=args.var / "cache")
    full = fashion_mnist.load_folder(folder)
    names = full.vocabulary[CONDITION]
    train = cut_classes(full.train, names, CUT, seed=0).stratified_head(args.subset, CONDITION)
    cut = ImageDataset("fashion-mnist-cut", train, full.test, full.vocabulary, full.roles)
    counts = {n: int((train.conditions[CONDITION] == i).sum()) for i, n in enumerate(names)}
    print(f"cut training set: {len(train)} images; rare: {({n: counts[n] for n in CUT})}", flush=True)

    # The generator, trained once on the cut data (cached: the slow part).
    gen_path = args.var / "bench" / f"augment_eval_cgan_e{args.gen_epochs}_n{len(train)}.pt"
    if gen_path.exists():
        generator = cgan.from_checkpoint(torch.load(gen_path, weights_only=True)).to(device)
    else:
        t = time.time()
        config = replace(cgan.CGANConfig(image_size=28, channels=1, conditions={CONDITION: 10}),
                         **cgan.PRESETS["cpu"]["model"])
        params = TrainParams(epochs=args.gen_epochs, batch_size=64, learning_rate=2e-4, seed=0, max_eval_examples=512)
        generator = train_cgan(config, params, train, full.test, device=device, progress=quiet,
                               should_stop=lambda: False).model
        gen_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(cgan.to_checkpoint(generator), gen_path)
        print(f"generator: {args.gen_epochs} epochs in {time.time() - t:.0f} s", flush=True)

    gate_model = fit(train, full.test, seed=1000, epochs=args.clf_epochs, width=args.width, device=device)
    index = build_index(gate_model, cut, {}, device)
    rule = GateRule(args.tau, index.distance_at(args.quantile))
    requested = RarePolicy(min_count=0, median_share=args.median_share, max_per_class=10_000).rare(counts)
    synthetic, gate_summary = synthesize(generator, gate_model, index, names, requested, rule, device)
    print(f"gate: {json.dumps(gate_summary['classes'])}", flush=True)

    results: dict[str, list[dict]] = {s: [] for s in SETUPS}
    for seed in range(args.seeds):
        runs = {
            SETUPS[0]: {},
            SETUPS[1]: {"class_weights": {CONDITION: inverse_frequency(train, CONDITION, 10, device)}},
            SETUPS[2]: {"oversample_by": CONDITION},
        }
        for setup, options in runs.items():
            results[setup].append(scores(fit(train, full.test, seed, args.clf_epochs, args.width, device, **options),
                                         full.test, names, device))
        results[SETUPS[3]].append(scores(fit(train.concat(synthetic), full.test, seed, args.clf_epochs, args.width,
                                             device), full.test, names, device))
        print(f"seed {seed}: " + ", ".join(f"{s[:1]} {r[-1]['accuracy']:.3f}" for s, r in results.items()), flush=True)

    cas_train = balanced_synthetic(generator, 10, args.cas_per_class, device)
    cas = [scores(fit(cas_train, full.test, seed, args.clf_epochs, args.width, device), full.test, names, device)
           for seed in range(args.seeds)]
    real = results[SETUPS[0]]

    rare = list(CUT)
    print(f"\n{len(train)} training images; {', '.join(f'{n} {counts[n]}' for n in rare)}; "
          f"{len(synthetic)} synthetic kept; {args.seeds} seeds, mean ± std\n")
    print("| setup | " + " | ".join(f"{n} recall" for n in rare) + " | minority mean | overall accuracy |")
    print("|---" * (len(rare) + 3) + "|")
    for setup, rows in results.items():
        recalls = [mean_std([r["recall"][n] for r in rows]) for n in rare]
        minority = [float(np.mean([r["recall"][n] for n in rare])) for r in rows]
        print(f"| {setup} | " + " | ".join(recalls) + f" | {mean_std(minority)} | "
              f"{mean_std([r['accuracy'] for r in rows])} |")
    cas_acc, real_acc = [r["accuracy"] for r in cas], [r["accuracy"] for r in real]
    print(f"\nCAS (synthetic only, {args.cas_per_class}/class): {mean_std(cas_acc)} vs real (cut) "
          f"{mean_std(real_acc)}: {np.mean(cas_acc) / np.mean(real_acc):.1%} of real")

    verdicts = {}
    for name in rare:
        def recall(setup: str, n: str = name) -> float:
            return float(np.mean([r["recall"][n] for r in results[setup]]))
        best_other = max(recall(SETUPS[0]), recall(SETUPS[1]), recall(SETUPS[2]))
        drop = np.mean([r["accuracy"] for r in real]) - np.mean([r["accuracy"] for r in results[SETUPS[3]]])
        verdicts[name] = {"helps": bool(recall(SETUPS[3]) > best_other and drop <= 0.005),
                          "recall_with_synthetic": round(recall(SETUPS[3]), 4), "best_without": round(best_other, 4),
                          "accuracy_drop": round(float(drop), 4)}
    print("\nverdicts: " + json.dumps(verdicts))
    elapsed = time.time() - started
    print(f"\n{platform.node()} ({os.cpu_count()} cores, {device}), {date.today()}, {elapsed / 60:.1f} min")
    out = args.var / "bench" / "augment_eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"counts": counts, "gate": gate_summary, "results": results, "cas": cas,
                               "verdicts": verdicts, "args": {k: str(v) for k, v in vars(args).items()},
                               "elapsed_s": elapsed}, indent=1))
    if args.record:
        from bench.local import local_storage

        local_storage(args.var).put_json("augmented/fashion-mnist/verdicts.json", {
            "measured_by": "bench/augment_eval.py", "date": str(date.today()), "classes": verdicts})


if __name__ == "__main__":
    main()

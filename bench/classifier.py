"""The domain classifier's recipe, measured: train it on the whole demo catalog with a preset (and
overrides) through the same function the `train` job calls, then print held-out top-1/top-3 per head,
balanced accuracy, recall of the rare types, calibration before and after temperature scaling, and
the time taken. One run per invocation; compare recipes by running it with different flags.

    python -m bench.classifier [--preset cpu] [--epochs N] [--no-colour-stats] [--balance-power P]
                               [--label-smoothing S] [--max-minutes M] [--model FIELD=VALUE]
                               [--json out.json] [--save classifier.pt]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from worker.datasets import catalog
from worker.models import classifier
from worker.training.classifier_trainer import (
    Recipe,
    calibrate,
    held_out_logits,
    per_class_accuracy,
    train_classifier,
)
from worker.training.common import TrainParams
from worker.training.precision import autocast_dtype

RARE = 50  # training images: a type below this is "rare"


def load_catalog(datasets: Path) -> catalog.ImageDataset:
    folder = datasets / catalog.DEMO_FOLDER
    dataset, _ = catalog.import_catalog("catalog", folder / "styles.csv", catalog.ImageSource(folder / "images.zip"),
                                        catalog.ImportOptions(), lambda *_: None)
    return dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=Path(os.environ.get("ATELIER_DATASETS", "../shared/datasets")))
    parser.add_argument("--preset", default="cpu", choices=sorted(classifier.PRESETS))
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--max-minutes", type=float)
    parser.add_argument("--balance-power", type=float)
    parser.add_argument("--label-smoothing", type=float)
    parser.add_argument("--threads", type=int, help="torch threads (default: every core)")
    parser.add_argument("--no-colour-stats", action="store_true")
    parser.add_argument("--model", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a model config field (JSON value), e.g. --model width=24")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--save", type=Path, help="also save the calibrated classifier's checkpoint here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))

    started = time.perf_counter()
    dataset = load_catalog(args.datasets)
    print(f"catalog: {len(dataset.train)} train / {len(dataset.test)} held-out images, "
          f"{len(dataset.vocabulary['articleType'])} types, {len(dataset.vocabulary['baseColour'])} colours "
          f"(import {time.perf_counter() - started:.0f} s)")
    fp32 = autocast_dtype(torch.device("cpu")) is None  # as the train job chooses (its fp32 variant)
    preset = classifier.preset_for(args.preset, fp32=fp32)
    overrides = {k: json.loads(v) for k, v in (m.split("=", 1) for m in args.model)}
    if args.no_colour_stats:
        overrides["colour_heads"] = ()
    config = classifier.config_for(dataset, args.preset, fp32=fp32, **overrides)
    train = preset["train"]
    params = TrainParams(epochs=args.epochs or train["epochs"], batch_size=train["batch_size"],
                         learning_rate=train["learning_rate"], seed=args.seed,
                         max_minutes=args.max_minutes or train.get("max_minutes"))
    recipe = Recipe(**preset.get("recipe", {}))
    recipe = replace(recipe, **{k: v for k, v in (("balance_power", args.balance_power),
                                                  ("label_smoothing", args.label_smoothing)) if v is not None})
    print(f"config {asdict(config)}\nparams {asdict(params)}\nrecipe {asdict(recipe)}", flush=True)

    started = time.perf_counter()

    def report(fraction: float, message: str) -> None:
        if "done" in message:
            print(f"{(time.perf_counter() - started) / 60:.1f} min: {message}", flush=True)

    result = train_classifier(config, params, dataset.train, dataset.test, device=torch.device("cpu"),
                              progress=report, should_stop=lambda: False,
                              stratify_by="articleType", oversample_by="articleType", recipe=recipe)
    train_s = time.perf_counter() - started
    model, calibration = calibrate(result.model, dataset.test, torch.device("cpu"))
    if args.save:
        torch.save(classifier.to_checkpoint(model), args.save)
    recall = {head: per_class_accuracy(model, dataset.test, head, names, torch.device("cpu"))
              for head, names in dataset.vocabulary.items()}
    counts = dict(zip(dataset.vocabulary["articleType"],
                      np.bincount(dataset.train.conditions["articleType"],
                                  minlength=len(dataset.vocabulary["articleType"])).tolist(), strict=True))
    rare = {t: r for t, r in recall["articleType"].items() if counts[t] < RARE}
    # the balanced reading the augmentation gate uses: logits less the log prior
    logits = held_out_logits(model, dataset.test, torch.device("cpu"))["articleType"]
    adjusted = (logits - torch.tensor(model.config.log_priors["articleType"])).argmax(dim=-1).numpy()
    truth = dataset.test.conditions["articleType"]
    balanced_recall = {t: float((adjusted[truth == i] == i).mean())
                       for i, t in enumerate(dataset.vocabulary["articleType"]) if (truth == i).any()}
    rare_balanced = [balanced_recall[t] for t in rare]
    final = result.final

    print("\n| epoch | minutes | type top-1 | type top-3 | colour top-1 | colour top-3 |")
    print("|---|---|---|---|---|---|")
    minutes = 0.0
    for row in result.history:
        minutes += row["seconds"] / 60
        print(f"| {row['epoch']} | {minutes:.1f} | {row['accuracy_articleType']:.1%} | {row['top3_articleType']:.1%} | "
              f"{row['accuracy_baseColour']:.1%} | {row['top3_baseColour']:.1%} |")
    print(f"\ntrained in {train_s / 60:.1f} min{' (' + result.stopped_early + ')' if result.stopped_early else ''}")
    print("\n| head | top-1 | top-3 | balanced (mean recall) | temperature | ECE before | ECE after |")
    print("|---|---|---|---|---|---|---|")
    for head in ("articleType", "baseColour"):
        c = calibration[head]
        print(f"| {head} | {final[f'accuracy_{head}']:.1%} | {final[f'top3_{head}']:.1%} | "
              f"{np.mean(list(recall[head].values())):.1%} | {c['temperature']:.2f} | {c['ece_before']:.3f} | "
              f"{c['ece_after']:.3f} |")
    print(f"\nbalanced reading (logit-adjusted, the augmentation gate's): top-1 {np.mean(adjusted == truth):.1%}, "
          f"mean recall {np.mean(list(balanced_recall.values())):.1%}, rare types' mean recall "
          f"{np.mean(rare_balanced):.1%}")
    print(f"rare types (< {RARE} training images), held-out recall: mean {np.mean(list(rare.values())):.1%}")
    print(", ".join(f"{t} ({counts[t]}) {r:.0%}" for t, r in sorted(rare.items(), key=lambda kv: counts[kv[0]])))
    worst = sorted(recall["articleType"].items(), key=lambda kv: kv[1])[:10]
    print("lowest recall: " + ", ".join(f"{t} ({counts[t]}) {r:.0%}" for t, r in worst))
    if args.json:
        args.json.write_text(json.dumps({"config": asdict(config), "params": asdict(params), "recipe": asdict(recipe),
                                         "history": result.history, "train_minutes": train_s / 60,
                                         "calibration": calibration, "recall": recall, "counts": counts,
                                         "balanced_recall": balanced_recall}, indent=1))


if __name__ == "__main__":
    main()

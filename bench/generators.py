"""Image families side by side on the same budget (issue 15, item 6): train one family on the whole
demo catalog through the same functions as the `train` job, for `--minutes` of training, then judge
it with a domain classifier checkpoint and draw the four prompts' contact sheets. One run per
invocation; the rows of docs/BENCHMARKS.md come from several.

    python -m bench.generators --family cgan --judge classifier.pt --out docs/generators/cgan \\
        [--minutes 25] [--plain] [--model FIELD=VALUE] [--json row.json] [--save model.pt]

`--plain` trains the cGAN as it was before this work (z at the input only, no mode-seeking loss, no
auxiliary classifier, the catalog's own mix, translation only) for the before/after rows.

Printed: classifier-FID/KID against the real-vs-real floor; type and colour adherence; adherence of
common types (>= 500 training photos) relative to the judge on real photos of those types; top-3
adherence of rare types (< 50 photos) relative to the judge's real top-3; within-condition
diversity relative to real photos; the prompts' interpretations and sheets.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from bench.classifier import load_catalog
from worker.evaluation import evaluate_generator, to_float
from worker.families import IMAGE_FAMILIES, SampleRequest, type_condition
from worker.handlers.train import joint_counts
from worker.images import grid, png_bytes, to_uint8
from worker.models import classifier
from worker.prompts import load_interpreter
from worker.training.cgan_trainer import GANRecipe
from worker.training.common import TrainParams

PROMPTS = ("black short sleeve jumpsuit", "red dress", "white sneakers", "navy blue tshirt")
COMMON, RARE = 500, 50  # training photos: at least COMMON is a common type, fewer than RARE a rare one
SEEDS = 16  # images per prompt and per rare type
CPU = torch.device("cpu")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@torch.no_grad()
def top3_hits(judge: classifier.Classifier, images: torch.Tensor, head: str, index: int) -> float:
    probs = classifier.predict(judge, images)[head]
    return float((probs.topk(3, dim=-1).indices == index).any(dim=-1).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=Path(os.environ.get("ATELIER_DATASETS", "../shared/datasets")))
    parser.add_argument("--family", required=True, choices=sorted(IMAGE_FAMILIES))
    parser.add_argument("--judge", type=Path, required=True, help="a classifier checkpoint (bench.classifier --save)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the contact sheets")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--minutes", type=float, default=25.0, help="training time budget")
    parser.add_argument("--plain", action="store_true", help="cgan: the recipe before the mode-collapse work")
    parser.add_argument("--model", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--recipe", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a training recipe field, e.g. --recipe mode_seeking=0")
    parser.add_argument("--images", type=int, default=1000, help="generated images for FID and adherence")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--save", type=Path, help="also save the trained model's checkpoint here")
    parser.add_argument("--load", type=Path, help="judge this checkpoint (from --save) instead of training")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    dataset = load_catalog(args.datasets)
    family = IMAGE_FAMILIES[args.family]
    overrides = {k: json.loads(v) for k, v in (m.split("=", 1) for m in args.model)}
    recipe = family.recipe_for(args.preset)
    if args.plain:
        overrides.setdefault("noise_in_blocks", False)
        overrides.setdefault("aux_classifier", False)
        recipe = GANRecipe.plain()
    if args.recipe:
        recipe = replace(recipe, **{k: json.loads(v) for k, v in (r.split("=", 1) for r in args.recipe)})
    config = family.config_for(dataset, args.preset, **overrides)
    train = family.presets[args.preset]["train"]
    params = TrainParams(epochs=train["epochs"], batch_size=train["batch_size"], learning_rate=train["learning_rate"],
                         seed=args.seed, max_minutes=args.minutes, max_eval_examples=train.get("max_eval_examples"))
    print(f"{args.family}: config {asdict(config)}\nparams {asdict(params)}\nrecipe "
          f"{asdict(recipe) if recipe is not None else None}", flush=True)
    kind = type_condition(dataset)
    colour = (dataset.roles or {}).get("colour")
    started = time.perf_counter()

    def report(fraction: float, message: str) -> None:
        if "done" in message:
            print(f"{(time.perf_counter() - started) / 60:.1f} min: {message}", flush=True)

    if args.load:  # judged again, e.g. with a better judge: the training figures come from the saved run
        saved = torch.load(args.load, weights_only=True)
        model, history, stopped, train_minutes = (family.load(saved), saved.get("history", []),
                                                  saved.get("stopped_early"), saved.get("train_minutes", 0.0))
    else:
        result = family.train(config, params, dataset.train, dataset.test, device=CPU, progress=report,
                              should_stop=lambda: False, stratify_by=kind, recipe=recipe)
        model, history, stopped = result.model, result.history, result.stopped_early
        train_minutes = (time.perf_counter() - started) / 60
    if args.save:
        torch.save({**family.checkpoint(model), "history": history, "stopped_early": stopped,
                    "train_minutes": train_minutes}, args.save)
    judge = classifier.from_checkpoint(torch.load(args.judge, weights_only=True))
    mode = family.sampling_mode(model)

    def sample(cond: dict[str, int], seeds: list[int]) -> torch.Tensor:
        return family.sample(model, SampleRequest(cond, seeds, mode=mode), CPU)

    started = time.perf_counter()
    evaluation = evaluate_generator(sample, judge, dataset.train, dataset.test, dataset.vocabulary, kind,
                                    max_images=args.images, seed=args.seed, device=CPU)
    public = evaluation.public()
    counts = np.bincount(dataset.train.conditions[kind], minlength=len(dataset.vocabulary[kind]))
    names = dataset.vocabulary[kind]
    common = [t for t in evaluation.per_class if counts[names.index(t)] >= COMMON]
    gen_common = np.mean([evaluation.per_class[t] for t in common])
    real_common = np.mean([evaluation.real_per_class[t] for t in common])

    # rare types: SEEDS images each (with the type's commonest colour) against the judge's real top-3
    joint = joint_counts(dataset) or {}
    rare_gen, rare_real = [], []
    test_kinds = dataset.test.conditions[kind]
    for t, name in enumerate(names):
        if not 0 < counts[t] < RARE or not (test_kinds == t).any():
            continue
        cond = {k: 0 for k in dataset.vocabulary} | {kind: t}
        if colour and joint.get(name):
            cond[colour] = dataset.vocabulary[colour].index(max(joint[name], key=joint[name].get))
        rare_gen.append(top3_hits(judge, sample(cond, list(range(args.seed, args.seed + SEEDS))), kind, t))
        rare_real.append(top3_hits(judge, to_float(dataset.test.images[test_kinds == t]), kind, t))
    eval_minutes = (time.perf_counter() - started) / 60

    # the four prompts, read by the service's own interpreter
    interpreter = load_interpreter()
    vocab = interpreter.vocabulary(dataset.vocabulary[kind], dataset.vocabulary[colour] if colour else [])
    args.out.mkdir(parents=True, exist_ok=True)
    sheets = {}
    for prompt in PROMPTS:
        read = interpreter.interpret(prompt, vocab, colour_counts=joint)
        cond = {k: 0 for k in dataset.vocabulary} | {kind: names.index(read.type.value)}
        if colour and read.colour is not None:
            cond[colour] = dataset.vocabulary[colour].index(read.colour.value)
        images = to_uint8(sample(cond, list(range(args.seed, args.seed + SEEDS))))
        path = args.out / f"{slug(prompt)}.png"
        path.write_bytes(png_bytes(grid(images, 8, scale=2)))
        probs = classifier.predict(judge, to_float(images))[kind][:, cond[kind]]
        sheets[prompt] = {"conditions": {k: dataset.vocabulary[k][v] for k, v in cond.items()}, "sheet": str(path),
                          "type_confidence_mean": round(float(probs.mean()), 3)}

    row = {"family": args.family, "plain": args.plain, "epochs": len(history), "stopped_early": stopped,
           "train_minutes": round(train_minutes, 1),
           "eval_minutes": round(eval_minutes, 1), "fid": public["fid"], "floor_fid": public["floor"]["fid"],
           "kid": public["kid"], "floor_kid": public["floor"]["kid"], "adherence": public["adherence"],
           "real_accuracy": public["real_accuracy"], "common_types": len(common),
           "common_relative": round(float(gen_common / real_common), 3) if real_common else None,
           "rare_types": len(rare_gen),
           "rare_top3_relative": (round(float(np.mean(rare_gen) / np.mean(rare_real)), 3)
                                  if rare_real and np.mean(rare_real) > 0 else None),
           "diversity": public.get("diversity"), "per_condition_diversity": public.get("per_condition_diversity"),
           "per_class_adherence": public["per_class_adherence"],
           "relative_per_class_adherence": public["relative_per_class_adherence"], "prompts": sheets,
           "config": asdict(config), "recipe": asdict(recipe) if recipe is not None else None,
           "history": history}
    print("\n| family | recipe | epochs | train min | FID (floor) | KID (floor) | type adh. | colour adh. | "
          "common types rel. | rare top-3 rel. | diversity |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    adherence = public["adherence"]
    print(f"| {args.family} | {'plain' if args.plain else 'preset'} | {row['epochs']} | {row['train_minutes']} | "
          f"{row['fid']:.2f} ({row['floor_fid']:.2f}) | {row['kid']:.4f} ({row['floor_kid']:.4f}) | "
          f"{adherence.get(kind, float('nan')):.1%} | {adherence.get(colour, float('nan')):.1%} | "
          f"{row['common_relative']} ({len(common)} types) | {row['rare_top3_relative']} ({len(rare_gen)} types) | "
          f"{row['diversity']} |")
    for prompt, sheet in sheets.items():
        print(f"{prompt!r} -> {sheet['conditions']}: mean type confidence {sheet['type_confidence_mean']}, "
              f"{sheet['sheet']}")
    if args.json:
        args.json.write_text(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()

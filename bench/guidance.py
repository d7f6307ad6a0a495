"""What classifier-free guidance buys a diffusion checkpoint (issue 16): for each guidance scale, the
judge's type and colour adherence on `--seeds` images of every common type (with its commonest
colour), their within-condition variety, and the four prompts' mean type confidence, plus a contact
sheet per scale. Sampling only: train and save the model with `bench.generators --save` first.

    python -m bench.guidance --load diffusion.pt --judge classifier.pt [--guidance 1 2 4 7] [--steps 12]
                             [--seeds 8] [--out docs/generators/diffusion-guidance]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from bench.classifier import load_catalog
from bench.generators import COMMON, PROMPTS, slug
from worker.evaluation import to_float
from worker.families import IMAGE_FAMILIES, SampleRequest, type_condition
from worker.handlers.train import joint_counts
from worker.images import grid, png_bytes, to_uint8
from worker.models import classifier
from worker.prompts import load_interpreter

CPU = torch.device("cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=Path(os.environ.get("ATELIER_DATASETS", "../shared/datasets")))
    parser.add_argument("--load", type=Path, required=True, help="a diffusion checkpoint (bench.generators --save)")
    parser.add_argument("--judge", type=Path, required=True)
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 4.0, 7.0])
    parser.add_argument("--steps", type=int, help="default: the model's")
    parser.add_argument("--seeds", type=int, default=8, help="images per common type")
    parser.add_argument("--out", type=Path, help="a contact sheet per scale (the first prompt's)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    dataset = load_catalog(args.datasets)
    family = IMAGE_FAMILIES["diffusion"]
    model = family.load(torch.load(args.load, weights_only=True))
    judge = classifier.from_checkpoint(torch.load(args.judge, weights_only=True))
    kind = type_condition(dataset)
    colour = (dataset.roles or {}).get("colour")
    names, colours = dataset.vocabulary[kind], dataset.vocabulary[colour] if colour else []
    counts = np.bincount(dataset.train.conditions[kind], minlength=len(names))
    joint = joint_counts(dataset) or {}
    common = [t for t in range(len(names)) if counts[t] >= COMMON]
    conditions = [{kind: t, **({colour: colours.index(max(joint[names[t]], key=joint[names[t]].get))}
                               if colour and joint.get(names[t]) else {})} for t in common]
    interpreter = load_interpreter()
    vocab = interpreter.vocabulary(names, colours)
    prompts = []
    for prompt in PROMPTS:
        read = interpreter.interpret(prompt, vocab, colour_counts=joint)
        prompts.append({kind: names.index(read.type.value),
                        **({colour: colours.index(read.colour.value)} if colour and read.colour else {})})
    seeds = list(range(args.seeds))

    print(f"{len(common)} common types (>= {COMMON} photos), {args.seeds} seeds each; steps "
          f"{args.steps or model.config.steps}\n")
    print("| guidance | type adh. (common) | colour adh. (common) | variety (common) | "
          + " | ".join(f"{p!r} conf." for p in PROMPTS) + " | seconds |")
    print("|---" * (5 + len(PROMPTS)) + "|")
    for scale in args.guidance:
        options = {"guidance": scale, **({"steps": args.steps} if args.steps else {})}
        started = time.perf_counter()
        type_hits, colour_hits, spread = [], [], []
        for cond in conditions:
            images = family.sample(model, SampleRequest(cond, seeds, options=options), CPU)
            logits, features = judge.infer(images)
            type_hits.append(float((logits[kind].argmax(-1) == cond[kind]).float().mean()))
            if colour in cond:
                colour_hits.append(float((logits[colour].argmax(-1) == cond[colour]).float().mean()))
            spread.append(float(torch.pdist(features.float()).mean()))
        confidence = []
        for i, cond in enumerate(prompts):
            images = family.sample(model, SampleRequest(cond, list(range(16)), options=options), CPU)
            confidence.append(float(classifier.predict(judge, images)[kind][:, cond[kind]].mean()))
            if args.out and i == 0:
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / f"{slug(PROMPTS[0])}-guidance-{scale:g}.png").write_bytes(
                    png_bytes(grid(to_uint8(images), 8, scale=2)))
        print(f"| {scale:g} | {np.mean(type_hits):.1%} | {np.mean(colour_hits):.1%} | {np.mean(spread):.2f} | "
              + " | ".join(f"{c:.3f}" for c in confidence) + f" | {time.perf_counter() - started:.0f} |", flush=True)
    real = [to_float(dataset.test.images[dataset.test.conditions[kind] == t][:args.seeds]) for t in common]
    variety = np.mean([float(torch.pdist(judge.infer(x)[1].float()).mean()) for x in real])
    print(f"\nreal photos, the same types: variety {variety:.2f}")


if __name__ == "__main__":
    main()

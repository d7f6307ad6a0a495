"""Where saved classifiers go wrong on the held-out catalog, alone and averaged: top-1 per head for
each checkpoint and for their ensemble (mean log-probability), then the ensemble's most frequent
confusions and per-class recall for one head. An ensemble that gains little over its members makes
the same mistakes they do, which points at the labels rather than the network.

    python -m bench.classifier_errors run1.pt [run2.pt ...] [--head baseColour] [--pairs 25]
                                      [--group "Navy Blue,Blue" --group "Grey,Charcoal" ...]

`--group` reads the listed names of the head as one (their probabilities summed, a label read as any
member of its group counted right): what merging names the catalog uses interchangeably would give,
before anyone re-labels anything.

Checkpoints come from `python -m bench.classifier --save run.pt` (or a version's model.pt).
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from bench.classifier import load_catalog
from worker.models import classifier
from worker.training.classifier_trainer import held_out_logits, per_class_recall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--datasets", type=Path, default=Path(os.environ.get("ATELIER_DATASETS", "../shared/datasets")))
    parser.add_argument("--head", default="baseColour", help="the head whose confusions are listed")
    parser.add_argument("--pairs", type=int, default=25, help="confusions listed")
    parser.add_argument("--group", action="append", default=[], metavar="A,B,...",
                        help="names of --head read as one (repeatable)")
    args = parser.parse_args()

    dataset = load_catalog(args.datasets)
    cpu = torch.device("cpu")
    logits = [held_out_logits(classifier.from_checkpoint(torch.load(path, weights_only=True)), dataset.test, cpu)
              for path in args.checkpoints]
    print("| classifier | " + " | ".join(f"{head} top-1" for head in dataset.vocabulary) + " |")
    print("|---|" + "---|" * len(dataset.vocabulary))
    averaged = {head: sum(run[head].log_softmax(dim=-1) for run in logits) / len(logits) for head in dataset.vocabulary}
    for name, run in [*zip((p.name for p in args.checkpoints), logits, strict=True), ("ensemble", averaged)]:
        cells = [f"{float((run[h].argmax(-1).numpy() == dataset.test.conditions[h]).mean()):.2%}"
                 for h in dataset.vocabulary]
        print(f"| {name} | " + " | ".join(cells) + " |")

    names, truth = dataset.vocabulary[args.head], dataset.test.conditions[args.head]
    predicted = averaged[args.head].argmax(-1).numpy()
    wrong = Counter((names[t], names[p]) for t, p in zip(truth, predicted, strict=True) if t != p)
    print(f"\n{args.head}: {int((predicted != truth).sum())} of {len(truth)} held-out images wrong (ensemble)")
    print("\n| labelled | read as | images |\n|---|---|---|")
    for (label, read), count in wrong.most_common(args.pairs):
        print(f"| {label} | {read} | {count} |")
    if args.group:
        grouped = grouped_accuracy(averaged[args.head], truth, names, args.group)
        print(f"\n{args.head} with names grouped: {grouped:.2%} (the checkpoints given; ungrouped "
              f"{float((predicted == truth).mean()):.2%}): " + "; ".join(args.group))
    recall = per_class_recall(averaged[args.head], truth, names)
    commonest = Counter(truth.tolist()).most_common(20)
    print("\nrecall of the 20 commonest (held-out images): "
          + ", ".join(f"{names[i]} {recall[names[i]]:.0%} ({n})" for i, n in commonest))


def grouped_accuracy(log_probs: torch.Tensor, truth: np.ndarray, names: list[str], groups: list[str]) -> float:
    """Top-1 when each group of names is one class: probabilities (the normalised mean log-probability)
    summed within a group."""
    label = list(range(len(names)))
    for group in groups:
        members = [names.index(name.strip()) for name in group.split(",")]  # ValueError names a typo
        for i in members:
            label[i] = members[0]
    merged = torch.zeros(log_probs.shape[0], len(names)).index_add_(1, torch.tensor(label), log_probs.softmax(-1))
    return float((merged.argmax(-1).numpy() == np.array(label)[truth]).mean())


if __name__ == "__main__":
    main()

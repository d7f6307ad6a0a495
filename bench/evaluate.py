"""Evaluate existing image model versions with a domain classifier, exactly as a `train` job
evaluates a new one (worker/evaluation.py): classifier-FID and KID against held-out images next to
the real-vs-real floor, and type/colour adherence. For versions trained before a classifier existed.

    .venv/bin/python -m bench.evaluate --classifier classifier@v1 cvae@v9 cgan@v2 [--images 1000]

Reads the local store `make run` keeps under var/ (or the S3_* settings when set).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date
from pathlib import Path

import torch

from bench.local import load_version, local_storage
from shared.settings import Settings
from worker.datasets.store import load_dataset
from worker.evaluation import evaluate_generator
from worker.families import IMAGE_FAMILIES, SampleRequest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help='image model versions, e.g. "cvae@v9"')
    parser.add_argument("--classifier", required=True)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--var", type=Path, default=Path("var"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    storage = local_storage(args.var)
    judge, judge_meta = load_version(storage, args.classifier, args.device)
    dataset = load_dataset(judge_meta["dataset"], storage, Settings.from_env(), lambda *_: None)
    kind = (dataset.roles or {}).get("type") or sorted(dataset.vocabulary)[0]
    print(f"classifier {args.classifier} on {dataset.name} (held-out accuracy "
          f"{judge_meta['metrics'].get('accuracy', float('nan')):.3f}), {args.images} images, device {args.device}, "
          f"{platform.node()} ({os.cpu_count()} cores), {date.today()}\n")
    print("| model | sampling | FID | floor FID | KID | floor KID | adherence | lowest per-type adherence | time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for ref in args.models:
        model, meta = load_version(storage, ref, args.device)
        if meta["dataset"] != dataset.name:
            print(f"| {ref} | trained on {meta['dataset']}, not {dataset.name}: skipped | | | | | | | |")
            continue
        family = IMAGE_FAMILIES[meta["family"]]
        mode = family.sampling_mode(model)
        started = time.perf_counter()
        result = evaluate_generator(
            lambda cond, seeds, m=model, f=family, s=mode: f.sample(m, SampleRequest(cond, seeds, mode=s), args.device),
            judge, dataset.train, dataset.test, dataset.vocabulary, kind, max_images=args.images, seed=args.seed,
            device=torch.device(args.device))
        lowest = ", ".join(f"{k} {v:.0%}" for k, v in sorted(result.per_class.items(), key=lambda kv: kv[1])[:3])
        adherence = ", ".join(f"{k} {v:.1%}" for k, v in result.adherence.items())
        print(f"| {ref} | {mode} | {result.fid:.2f} | {result.floor_fid:.2f} | {result.kid:.4f} | "
              f"{result.floor_kid:.4f} | {adherence} | {lowest} | {time.perf_counter() - started:.0f} s |")


if __name__ == "__main__":
    main()

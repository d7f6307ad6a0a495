"""What batching across jobs saves in the model itself: K jobs' forward work one at a time against
one shared pass, in process, for each kind of job the worker batches (worker/batching.py) —
`generate_images` (cvae, cgan), `describe` (the language model) and `similar` (the classifier).

Models are freshly initialised at the `cpu` presets' sizes on the catalog's 64 px, 3-channel
shapes: the weights do not change the arithmetic, so timing needs no trained model. The language
model is untrained, so it never writes the end token and every row runs all `max_tokens` steps,
alone and together alike.

    .venv/bin/python -m bench.batching [--jobs 8] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from datetime import date

import torch

from worker.families import IMAGE_FAMILIES, SampleRequest
from worker.models import classifier, lm

CONDITIONS = {"articleType": 40, "baseColour": 30}  # about the catalog's vocabulary sizes
CONTEXTS = ["Women Black Solid Jumpsuit", "Men Navy Blue Checked Casual Shirt", "Women Red Floral Maxi Dress",
            "Men White Sneakers", "Women Grey Melange Sweatshirt", "Unisex Brown Leather Wallet"]


def best_of(repeats: int, *runs: Callable[[], object]) -> list[float]:
    """Seconds of the fastest of `repeats` runs of each, the runs interleaved so that a VM whose speed
    drifts during the measurement slows each of them alike."""
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, spent in zip(runs, times, strict=True):
            started = time.perf_counter()
            run()
            spent.append(time.perf_counter() - started)
    return [min(spent) for spent in times]


def image_rows(name: str, jobs: int, per_job: int) -> tuple[Callable[[], object], Callable[[], object]]:
    family = IMAGE_FAMILIES[name]
    config = family.config(**{"image_size": 64, "channels": 3, "conditions": CONDITIONS,
                              **family.presets["cpu"]["model"]})
    model = family.load(family.checkpoint(getattr(family.module, name.upper())(config)))
    requests = [SampleRequest({"articleType": j % 40, "baseColour": j % 30}, [j * per_job + i for i in range(per_job)])
                for j in range(jobs)]
    return (lambda: [family.sample(model, r, "cpu") for r in requests],
            lambda: family.sample_many(model, requests, "cpu"))


def describe_rows(jobs: int, per_job: int, max_tokens: int) -> tuple[Callable[[], object], Callable[[], object]]:
    config = lm.LMConfig(**lm.PRESETS["cpu"]["model"])
    tokenizer = lm.train_tokenizer(CONTEXTS * 20, config.vocab_size)
    model = lm.fresh(config, tokenizer)
    params = lm.SamplingParams(max_tokens=max_tokens)
    requests = [lm.TextRequest(CONTEXTS[0], [j * per_job + i for i in range(per_job)]) for j in range(jobs)]
    return (lambda: [lm.generate_many(model, [r], params) for r in requests],
            lambda: lm.generate_many(model, requests, params))


def similar_rows(jobs: int) -> tuple[Callable[[], object], Callable[[], object]]:
    config = classifier.ClassifierConfig(image_size=64, channels=3, conditions=CONDITIONS,
                                         colour_heads=("baseColour",), crop_width=0.75,
                                         **classifier.PRESETS["cpu"]["model"])
    model = classifier.Classifier(config).eval()
    photos = torch.rand(jobs, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return (lambda: [classifier.predict_with_features(model, photos[j:j + 1]) for j in range(jobs)],
            lambda: classifier.predict_with_features(model, photos))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=8, help="queued jobs served by one pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=80, help="tokens a description runs to")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    k = args.jobs
    cases = [
        (f"generate_images, cvae, {k} jobs × 8 images", *image_rows("cvae", k, 8)),
        (f"generate_images, cgan, {k} jobs × 8 images", *image_rows("cgan", k, 8)),
        (f"describe, lm, {k} jobs × 4 descriptions, {args.max_tokens} tokens", *describe_rows(k, 4, args.max_tokens)),
        (f"similar, classifier, {k} jobs × 1 photo", *similar_rows(k)),
    ]
    print(f"# bench.batching, {date.today()}, {platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"best of {args.repeats}")
    print("| jobs | one at a time | one pass | saved |")
    print("|---|---|---|---|")
    with torch.no_grad():
        for label, alone, together in cases:
            alone(), together()  # warm: allocator pools, oneDNN primitives
            a, t = best_of(args.repeats, alone, together)
            print(f"| {label} | {a * 1000:,.0f} ms | {t * 1000:,.0f} ms | {a / t:.2f}× |")


if __name__ == "__main__":
    main()

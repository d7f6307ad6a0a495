"""The description model, measured: generation speed (n=1 and n=8, in process on a warm model),
held-out perplexity, and the quality of what `describe` returns on two request sets, scored
exactly as the job scores them (worker/description_scoring.py):

- `prompts`: the merchandiser prompts of bench/prompts.jsonl, read by the prompt interpreter;
- `names`: held-out product names of the demo copy as contexts, where the real description written
  for the same product is scored the same way as a baseline for the checks themselves.

Per set: adherence of every sample and of the top-ranked one of n (what a merchandiser gets first),
distinct-2 over all samples, copy rate of every sample and of the top-ranked one.

    .venv/bin/python -m bench.describe --model lm@v2          # from the local `make run` store
    .venv/bin/python -m bench.describe --checkpoint model.pt  # a checkpoint file
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch

from bench.local import load_version, local_storage
from worker.datasets import descriptions
from worker.describing import CopyRequest, from_interpretation, ranked
from worker.description_scoring import CopyIndex, TrainingCopy, adherence, lexicon, similarities
from worker.models import lm
from worker.prompts import PromptInterpreter, load_encoder
from worker.training.lm_trainer import perplexity

PROMPTS = Path(__file__).with_name("prompts.jsonl")
SPEED_CONTEXTS = ["Women Black Solid Jumpsuit", "Men Navy Blue Checked Casual Shirt", "White Sneakers",
                  "Red Floral Maxi Dress"]


def load_checkpoint(args: argparse.Namespace) -> lm.LanguageModel:
    if args.checkpoint:
        blob = args.checkpoint.read_bytes()
        return lm.from_checkpoint(torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True))
    return load_version(local_storage(args.var), args.model)[0]


def speed(model: lm.LanguageModel, n: int, repeats: int, device: str) -> tuple[float, float]:
    """(p50 latency ms, generated tokens per second) for one request of n descriptions."""
    params = lm.SamplingParams()
    lm.generate(model, SPEED_CONTEXTS[0], [0] * n, params, device)  # warm-up
    times, tokens = [], 0
    for r in range(repeats):
        context = SPEED_CONTEXTS[r % len(SPEED_CONTEXTS)]
        started = time.perf_counter()
        texts = lm.generate(model, context, [r * 100 + i for i in range(n)], params, device)
        times.append(time.perf_counter() - started)
        tokens += sum(len(model.tokenizer.encode(" " + t).ids) + 1 for t in texts)
    return statistics.median(times) * 1000, tokens / sum(times)


def distinct_2(texts: list[str]) -> float:
    bigrams = [tuple(words[i:i + 2]) for t in texts for words in [t.lower().split()] for i in range(len(words) - 1)]
    return len(set(bigrams)) / max(len(bigrams), 1)


def evaluate(model: lm.LanguageModel, requests: list[CopyRequest], n: int, encoder: object, index: CopyIndex,
             device: str, opening: str) -> dict[str, float]:
    samples, top = [], []
    for i, request in enumerate(requests):
        given = request.opening() if opening == "attributes" else ""
        texts = lm.generate(model, request.context, [i * 100 + s for s in range(n)], lm.SamplingParams(), device,
                            opening=given)
        sims = similarities(encoder, request.query, texts)
        scored = [{"text": t, "adherence": adherence(t, request.requested).public(), "similarity": s,
                   "copy": index.check(t).public()} for t, s in zip(texts, sims, strict=True)]
        samples += scored
        top.append(ranked(scored)[0])
    return {
        "requests": len(requests),
        "adherent": statistics.mean(s["adherence"]["adherent"] for s in samples),
        "adherent_top": statistics.mean(s["adherence"]["adherent"] for s in top),
        "adherence_score": statistics.mean(s["adherence"]["score"] for s in samples),
        "similarity": statistics.mean(s["similarity"] for s in samples),
        "distinct_2": distinct_2([s["text"] for s in samples]),
        "copy": statistics.mean(s["copy"]["flagged"] for s in samples),
        "copy_top": statistics.mean(s["copy"]["flagged"] for s in top),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help='a model version in the local store, e.g. "lm@v2"')
    source.add_argument("--checkpoint", type=Path, help="a model.pt file")
    parser.add_argument("--var", type=Path, default=Path("var"))
    parser.add_argument("--datasets", type=Path, default=Path(os.environ.get("ATELIER_DATASETS", "../shared/datasets")))
    parser.add_argument("--names", type=int, default=200, help="held-out product names to describe")
    parser.add_argument("--n", type=int, default=8, help="descriptions per request")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    model = load_checkpoint(args).to(args.device)
    columns = descriptions.DescriptionColumns()
    rows = descriptions.read_csv(args.datasets / descriptions.DEMO_FILE, columns)
    pairs, _ = descriptions.clean_pairs(rows, columns)
    train = [p for p in pairs if p.split == "train"]
    test = [p for p in pairs if p.split == "test"]
    encoder = load_encoder()
    interpreter = PromptInterpreter(encoder)
    lex = lexicon()
    vocab = interpreter.vocabulary(lex.type_values, lex.colour_values)
    training = TrainingCopy.build([(p.context, p.description) for p in train])
    index = training.index

    print(f"model: {args.model or args.checkpoint} ({sum(p.numel() for p in model.model.parameters()) / 1e6:.1f} M "
          f"parameters, base {model.config.base_model or 'none'}), device {args.device}, "
          f"{platform.node()} ({os.cpu_count()} cores), {date.today()}")
    started = time.perf_counter()
    ppl = perplexity(model, [(p.context, p.description) for p in test], 32, torch.device(args.device))
    print(f"held-out perplexity {ppl:.2f} on {len(test)} pairs ({time.perf_counter() - started:.0f} s)\n")

    print("| n | latency p50 | tokens/s |")
    print("|---|---|---|")
    for n in (1, 8):
        latency, rate = speed(model, n, args.repeats, args.device)
        print(f"| {n} | {latency:.0f} ms | {rate:.0f} |")

    prompts = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines() if line.strip()]
    sets = {"prompts": [from_interpretation(p, interpreter.interpret(p, vocab), training.type_names)
                        for p in prompts],
            "names": [from_interpretation(p.context, interpreter.interpret(p.context, vocab), training.type_names)
                      for p in sorted(test, key=lambda p: p.id)[:args.names]]}
    real = [p.description for p in sorted(test, key=lambda p: p.id)[:args.names]]
    real_adherent = statistics.mean(adherence(t, r.requested).adherent for t, r in zip(real, sets["names"],
                                                                                        strict=True))
    real_copy = statistics.mean(index.check(t).flagged for t in real)
    print(f"\nquality, n={args.n} per request (top = the first of the ranked n)\n")
    print("| set | opening | requests | adherent (all) | adherent (top) | adherence score | similarity | "
          "distinct-2 | copy (all) | copy (top) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, requests in sets.items():
        for opening in ("free", "attributes"):
            m = evaluate(model, requests, args.n, encoder, index, args.device, opening)
            print(f"| {name} | {opening} | {m['requests']} | {m['adherent']:.1%} | {m['adherent_top']:.1%} | "
                  f"{m['adherence_score']:.3f} | {m['similarity']:.3f} | {m['distinct_2']:.3f} | {m['copy']:.1%} | "
                  f"{m['copy_top']:.1%} |")
    print(f"| names: the real held-out copy | | {len(real)} | {real_adherent:.1%} | | | | {distinct_2(real):.3f} | "
          f"{real_copy:.1%} | |")


if __name__ == "__main__":
    main()

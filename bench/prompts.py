"""Prompt-interpreter accuracy on bench/prompts.jsonl: merchandiser prompts (paraphrases,
abbreviations, typos, word order) with the expected product type and colour, against the
vocabulary of the demo catalog as `import_dataset` builds it (Apparel, Footwear, Accessories;
classes with at least 8 images). Then refusals: the share of prompts for things no fashion catalog
sells (bench/prompts_out_of_catalog.jsonl, the calibration set, and
bench/prompts_out_of_catalog_holdout.jsonl, written after the thresholds were chosen) that are
refused as not understood, against the catalog's vocabulary and Fashion-MNIST's.

    python -m bench.prompts [--datasets DIR] [--no-wordnet]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

from worker.datasets import catalog
from worker.prompts import PromptInterpreter, load_interpreter

PROMPT_SETS = {
    # written with the lexicon: everyday words, abbreviations, typos, word order
    "main": Path(__file__).with_name("prompts.jsonl"),
    # words deliberately outside the lexicon ("timepiece", "ruby"): tests the embedding fallback
    "unlisted": Path(__file__).with_name("prompts_unlisted.jsonl"),
    # more such words, written after the compound rule was chosen on "unlisted"; the WordNet rule was
    # chosen after reading its words' WordNet entries, so it is not blind for that rule
    "unlisted (held out)": Path(__file__).with_name("prompts_unlisted_holdout.jsonl"),
    # a second such set, written before the WordNet fallback was built, never tuned on
    "unlisted (held out 2)": Path(__file__).with_name("prompts_unlisted_holdout2.jsonl"),
}
REFUSAL_SETS = {
    "out of catalog (calibration)": Path(__file__).with_name("prompts_out_of_catalog.jsonl"),
    "out of catalog (held out)": Path(__file__).with_name("prompts_out_of_catalog_holdout.jsonl"),
}
FASHION_MNIST_TYPES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                       "Ankle boot"]


def demo_vocabulary(datasets: Path) -> tuple[list[str], list[str]]:
    """Types and colours of the default catalog import, read from styles.csv (no images needed)."""
    options = catalog.ImportOptions()
    report = catalog.ImportReport()
    rows = catalog.read_rows(datasets / catalog.DEMO_FOLDER / "styles.csv", options.columns)
    items = catalog.select_items(rows, options, report)
    counts = Counter(item.type for item in items)
    kept = [item for item in items if counts[item.type] >= options.min_class_count]
    return sorted({i.type for i in kept}), sorted({i.colour for i in kept})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=Path(os.environ.get("ATELIER_DATASETS", "../shared/datasets")))
    parser.add_argument("--no-wordnet", action="store_true", help="similarity alone for unlisted words (before)")
    args = parser.parse_args()

    types, colours = demo_vocabulary(args.datasets)
    started = time.perf_counter()
    interpreter = load_interpreter(wordnet=not args.no_wordnet)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    vocab = interpreter.vocabulary(types, colours)
    vocab_s = time.perf_counter() - started
    print(f"vocabulary: {len(types)} types, {len(colours)} colours")
    print(f"WordNet: {'on' if interpreter.wordnet is not None else 'off'}")
    print(f"encoder load {load_s:.1f} s, vocabulary embeddings {vocab_s * 1000:.0f} ms (once per model version)\n")
    print("| prompt set | prompts | type top-1 | colour top-1 | both | p50 / max latency | type matched by |")
    print("|---|---|---|---|---|---|---|")
    all_misses = []
    for name, path in PROMPT_SETS.items():
        cases = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        row, misses = evaluate(interpreter, vocab, cases)
        print(f"| {name} | {row}")
        all_misses += [(name, *m) for m in misses]
    fashion_mnist = interpreter.vocabulary(FASHION_MNIST_TYPES, [])
    print("\n| refusal set | prompts | refused (catalog) | refused (Fashion-MNIST) |")
    print("|---|---|---|---|")
    accepted = []
    for name, path in REFUSAL_SETS.items():
        cases = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        shares = []
        for label, vocabulary in (("catalog", vocab), ("fashion-mnist", fashion_mnist)):
            results = [(case["prompt"], interpreter.interpret(case["prompt"], vocabulary)) for case in cases]
            shares.append(sum(not r.understood for _, r in results) / len(cases))
            accepted += [(name, label, prompt, r.type) for prompt, r in results if r.understood]
        print(f"| {name} | {len(cases)} | {shares[0]:.1%} | {shares[1]:.1%} |")
    if all_misses:
        print("\nmisses (set: prompt: expected -> got):")
        for name, prompt, et, ec, gt, gc in all_misses:
            print(f"- {name}: {prompt!r}: {et} / {ec} -> {gt} / {gc}")
    if accepted:
        print("\nout-of-catalog prompts read as products (set, vocabulary: prompt -> type, how, cosine):")
        for name, label, prompt, match in accepted:
            print(f"- {name}, {label}: {prompt!r} -> {match.value}, {match.how}, {match.confidence:.3f}")


def evaluate(interpreter: PromptInterpreter, vocab: object, cases: list[dict]) -> tuple[str, list[tuple]]:
    type_ok = colour_ok = both_ok = 0
    latencies, misses, how = [], [], Counter()
    for case in cases:
        t0 = time.perf_counter()
        result = interpreter.interpret(case["prompt"], vocab)
        latencies.append((time.perf_counter() - t0) * 1000)
        got_type = result.type.value if result.understood else None
        got_colour = result.colour.value if result.colour else None
        how[result.type.how if result.type else "none"] += 1
        t, c = got_type == case["type"], got_colour == case["colour"]
        type_ok += t
        colour_ok += c
        both_ok += t and c
        if not (t and c):
            misses.append((case["prompt"], case["type"], case["colour"], got_type, got_colour))
    n = len(cases)
    latencies.sort()
    matched_by = ", ".join(f"{k} {v}" for k, v in how.most_common())
    row = (f"{n} | {type_ok / n:.1%} | {colour_ok / n:.1%} | {both_ok / n:.1%} | "
           f"{latencies[n // 2]:.1f} / {latencies[-1]:.1f} ms | {matched_by} |")
    return row, misses


if __name__ == "__main__":
    main()

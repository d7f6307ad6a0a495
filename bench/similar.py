"""Visual search, measured through the service (`make run`, a classifier trained on the catalog):

- precision@5: over held-out catalog items queried by id (`similar`, k=5), the share of neighbours
  of the query's product type (the query itself is never among them), overall and per type;
- the same for held-out photos sent as images (JPEG from the demo zip): a photo's own item is
  expected first, so its hit rate is reported and precision@5 counts the other neighbours;
- latency: submit with `Prefer: wait` to the answer, warm, p50 / p95.

    .venv/bin/python -m bench.similar [--url http://127.0.0.1:8000] [--queries 500] [--classifier REF]

`--checkpoint classifier.pt` measures precision@5 offline instead, with the same index code over the
demo catalog (no service, no latency): for comparing classifier recipes before one is trained
through the service.
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import statistics
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

import numpy as np
import requests

from bench.local import local_storage
from worker.datasets.catalog import DEMO_FOLDER, ImageSource


def submit(session: requests.Session, url: str, job_input: dict) -> tuple[dict, float]:
    started = time.perf_counter()
    response = session.post(f"{url}/v1/jobs", json={"type": "similar", "input": job_input},
                            headers={"Prefer": "wait=30"}, timeout=60)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    job = response.json()
    if job["status"] != "succeeded":
        raise RuntimeError(f"similar job {job['id']} {job['status']}: {job.get('error')}")
    return job["output"], elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("ATELIER_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--classifier")
    parser.add_argument("--dataset", default="catalog")
    parser.add_argument("--var", type=Path, default=Path("var"))
    parser.add_argument("--datasets", type=Path, default=Path(os.environ.get("ATELIER_DATASETS", "../shared/datasets")))
    parser.add_argument("--checkpoint", type=Path, help="offline: a classifier checkpoint (bench.classifier --save)")
    args = parser.parse_args()
    if args.checkpoint:
        offline(args)
        return

    items = [row for row in local_storage(args.var).get_json(f"datasets/{args.dataset}/index.json")
             if row["split"] == "test"]
    rng = np.random.default_rng(0)
    chosen = [items[i] for i in rng.permutation(len(items))[:args.queries]]
    extra = {"classifier": args.classifier} if args.classifier else {}
    session = requests.Session()
    submit(session, args.url, {"item": chosen[0]["id"], "k": 5, **extra})  # warm: model, index, dataset loaded

    per_type: dict[str, list[float]] = defaultdict(list)
    latencies = []
    for row in chosen:
        out, elapsed = submit(session, args.url, {"item": row["id"], "k": 5, **extra})
        latencies.append(elapsed * 1000)
        per_type[row["type"]].append(np.mean([n["articleType"] == row["type"] for n in out["neighbours"]]))
    precision = float(np.mean([p for values in per_type.values() for p in values]))

    source = ImageSource(args.datasets / DEMO_FOLDER / "images.zip")
    found_first, photo_precision, photo_latency = [], [], []
    for row in chosen[:args.photos]:
        data = source.read(row["id"])
        out, elapsed = submit(session, args.url, {"image": base64.b64encode(data).decode(), "k": 6, **extra})
        photo_latency.append(elapsed * 1000)
        ids = [n["id"] for n in out["neighbours"]]
        found_first.append(ids[0] == row["id"])
        others = [n for n in out["neighbours"] if n["id"] != row["id"]][:5]
        photo_precision.append(np.mean([n["articleType"] == row["type"] for n in others]))
    source.close()

    def pct(values: list[float], q: float) -> float:
        return float(np.percentile(values, q))

    print(f"bench.similar — {date.today()}, {platform.node()}, {os.cpu_count()} CPUs, {args.url}, "
          f"classifier {out.get('classifier')}")
    print("\n| queries | n | precision@5 (same type) | itself first | latency p50 / p95 (Prefer: wait) |")
    print("|---|---|---|---|---|")
    print(f"| held-out items by id | {len(chosen)} | {precision:.3f} | (excluded) | "
          f"{statistics.median(latencies):.0f} / {pct(latencies, 95):.0f} ms |")
    print(f"| held-out photos (JPEG) | {len(found_first)} | {np.mean(photo_precision):.3f} | "
          f"{np.mean(found_first):.1%} | {statistics.median(photo_latency):.0f} / {pct(photo_latency, 95):.0f} ms |")
    worst = sorted(((np.mean(v), t, len(v)) for t, v in per_type.items() if len(v) >= 3))[:8]
    print("\nlowest precision@5 by type (queries): " + ", ".join(f"{t} {p:.2f} ({n})" for p, t, n in worst))


def offline(args: argparse.Namespace) -> None:
    """Precision@5 of held-out catalog items against the index of every catalog image, the item
    itself left out, from a classifier checkpoint."""
    import torch

    from bench.classifier import load_catalog
    from worker.feature_index import build_index, embed
    from worker.models import classifier

    dataset = load_catalog(args.datasets)
    model = classifier.from_checkpoint(torch.load(args.checkpoint, weights_only=True))
    device = torch.device("cpu")
    index = build_index(model, dataset, {}, device)
    kind = (dataset.roles or {}).get("type") or "articleType"
    names = dataset.vocabulary[kind]
    type_of = {str(i): names[t] for split in (dataset.train, dataset.test)
               for i, t in zip(split.ids, split.conditions[kind], strict=True)}
    rows = np.random.default_rng(0).permutation(len(dataset.test))[:args.queries]
    raw = embed(model, dataset.test.images[rows], device)
    per_type: dict[str, list[float]] = defaultdict(list)
    for row, found in zip(rows, index.nearest(raw, 6), strict=True):
        own = str(dataset.test.ids[row])
        others = [n for n in found if n.id != own][:5]
        per_type[type_of[own]].append(np.mean([type_of[n.id] == type_of[own] for n in others]))
    precision = float(np.mean([p for values in per_type.values() for p in values]))
    print(f"bench.similar offline — {date.today()}, {platform.node()}, {args.checkpoint}: precision@5 "
          f"{precision:.3f} over {len(rows)} held-out items")
    worst = sorted(((np.mean(v), t, len(v)) for t, v in per_type.items() if len(v) >= 3))[:8]
    print("lowest precision@5 by type (queries): " + ", ".join(f"{t} {p:.2f} ({n})" for p, t, n in worst))


if __name__ == "__main__":
    main()

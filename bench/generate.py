"""End-to-end latency of `generate_images` with a warm worker, next to the bare generator forward
time measured in the same run: the gap is the service's overhead (queueing, PNG encoding, uploads,
the manifest, status polling).

It starts its own Valkey, SeaweedFS, API and one Celery worker, imports a slice of the demo catalog,
and trains one `cpu`-preset model per family for a single short epoch (the weights' quality does
not matter for timing, their size does). Families with a `steps` setting (diffusion) are timed at
each of `--steps`, with `--slow-repeats` timed jobs since one job of 64 images is a minute here.

    .venv/bin/python -m bench.generate [--repeats 10] [--device cpu|cuda] [--family cvae --family ...]
                                       [--steps 10 25 50] [--slow-repeats 2]
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch

from deploy.local.servers import LocalStack
from shared.families import IMAGE_FAMILIES as FAMILY_NAMES
from shared.families import facts
from shared.registry import model_prefix, parse_ref
from shared.storage import Storage
from tests.support import ApiServer, Client, WorkerProcess, datasets_dir, settings_from, stack_env
from worker.families import IMAGE_FAMILIES, SampleRequest

SLICE = {"name": "bench-slice", "classes": ["Jumpsuit", "Tshirts", "Dresses", "Casual Shoes"], "max_per_class": 30}
COND = {"articleType": "Dresses", "baseColour": "Black"}
DRY_RUN_PROMPTS = ["black short sleeve jumpsuit", "navy tee", "white sneakers", "red evening gown"]


def p50(values: list[float]) -> float:
    return statistics.median(values)


def forward_ms(storage: Storage, ref: str, cond: dict[str, str], n: int, repeats: int, device: str,
               options: dict | None = None) -> float:
    """The bare sampler: latent noise -> decoder/generator (or the whole diffusion sampler) -> [0, 1]
    tensor on the CPU."""
    family, version = parse_ref(ref)
    blob = storage.get(model_prefix(family, version) + "model.pt")
    model = IMAGE_FAMILIES[family].load(torch.load(io.BytesIO(blob), weights_only=True)).to(device)
    meta = storage.get_json(model_prefix(family, version) + "model.json")
    index = {k: meta["vocabulary"][k].index(v) for k, v in cond.items()}
    options = options or {}
    IMAGE_FAMILIES[family].sample(model, SampleRequest(index, list(range(n)), options=options), device)  # warm-up
    times = []
    for r in range(repeats):
        started = time.perf_counter()
        IMAGE_FAMILIES[family].sample(model, SampleRequest(index, [r * 1000 + i for i in range(n)], options=options),
                                      device)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - started) * 1000)
    return p50(times)


def end_to_end_ms(client: Client, ref: str, n: int, repeats: int, sampling: dict | None = None,
                  warm_up: int = 2) -> tuple[float, float, float]:
    """(client-observed p50, p95, worker run time p50) for submit -> succeeded with Prefer: wait."""
    observed, run = [], []
    for r in range(repeats + warm_up):
        started = time.perf_counter()
        job = client.submit("generate_images", {"conditions": COND, "n": n, "seed": r, "model": ref,
                                                **({"sampling": sampling} if sampling else {})},
                            headers={"Prefer": "wait=60"}, expect=(200, 202))
        if job["status"] != "succeeded":
            job = client.wait(job["id"], timeout=900)
        elapsed = (time.perf_counter() - started) * 1000
        assert job["status"] == "succeeded", job
        if r >= warm_up:  # the first ones warm the model cache and the connections
            observed.append(elapsed)
            run.append((datetime.fromisoformat(job["finished_at"]) -
                        datetime.fromisoformat(job["started_at"])).total_seconds() * 1000)
    observed.sort()
    return p50(observed), observed[int(0.95 * (len(observed) - 1))], p50(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--family", action="append", choices=FAMILY_NAMES, help="default: every image family")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50], help="diffusion sampler steps")
    parser.add_argument("--slow-repeats", type=int, default=2, help="timed jobs per row for the diffusion rows")
    args = parser.parse_args()
    if datasets_dir() is None:
        raise SystemExit("set ATELIER_DATASETS to the demo data folder")

    with tempfile.TemporaryDirectory(prefix="atelier-bench-") as tmp:
        root = Path(tmp)
        stack = LocalStack(root / "servers").start()
        env = stack_env(stack, root, LOG_LEVEL="WARNING", ATELIER_DEVICE=args.device)
        settings = settings_from(env)
        api = ApiServer(settings).start()
        worker = WorkerProcess(env, root / "worker.log").start()
        client, storage = Client(api.url), Storage(settings)
        try:
            done = client.wait(client.submit("import_dataset", SLICE)["id"], timeout=300)
            assert done["status"] == "succeeded", done
            refs = {}
            for family in args.family or FAMILY_NAMES:
                job = client.submit("train", {"family": family, "dataset": SLICE["name"], "preset": "cpu",
                                              "epochs": 1, "max_train_examples": 64, "seed": 1})
                done = client.wait(job["id"], timeout=900)
                assert done["status"] == "succeeded", (done, worker.tail())
                refs[family] = done["output"]["model"]
            print(f"machine: {platform.node()} ({platform.processor() or platform.machine()}), "
                  f"{torch.get_num_threads()} torch threads, device {args.device}; {args.repeats} timed jobs each\n")
            print("| model (cpu preset) | n | end-to-end p50 | p95 | worker run p50 | forward p50 | "
                  "end-to-end / forward |")
            print("|---|---|---|---|---|---|---|")
            for family, ref in refs.items():
                stepped = "steps" in facts(family).sampling
                for n in (8, 64):
                    for steps in args.steps if stepped else [None]:
                        sampling = {"steps": steps} if steps else None
                        repeats = args.slow_repeats if stepped else args.repeats
                        e2e, e2e95, run = end_to_end_ms(client, ref, n, repeats, sampling, warm_up=1 if stepped else 2)
                        fwd = forward_ms(storage, ref, COND, n, repeats, args.device, sampling)
                        label = f"{family}, {steps} steps" if steps else family
                        print(f"| {label} | {n} | {e2e:.0f} ms | {e2e95:.0f} ms | {run:.0f} ms | {fwd:.1f} ms | "
                              f"{e2e / fwd:.1f}x |", flush=True)
            dry = []
            for r in range(args.repeats + 2):
                started = time.perf_counter()
                prompt = DRY_RUN_PROMPTS[r % len(DRY_RUN_PROMPTS)]
                job = client.submit("generate_images", {"prompt": prompt, "dry_run": True,
                                                        "model": next(iter(refs.values()))},
                                    headers={"Prefer": "wait=60"}, expect=(200, 202))
                assert job["status"] == "succeeded", job
                if r >= 2:
                    dry.append((time.perf_counter() - started) * 1000)
            dry.sort()
            print(f"\nprompt dry_run end-to-end (warm worker): p50 {p50(dry):.0f} ms, "
                  f"p95 {dry[int(0.95 * (len(dry) - 1))]:.0f} ms")
        finally:
            worker.stop()
            api.stop()
            stack.stop()


if __name__ == "__main__":
    main()

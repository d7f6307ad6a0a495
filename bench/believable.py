"""What a believable picture costs: `generate_images` with and without `min_confidence`, through the
service (`make run`, a catalog classifier and image models trained), for the prompts a merchandiser
tries first. For each model and threshold: images returned of those asked for, candidates drawn and
rejected, the requested type's mean calibrated confidence over the returned images (by the same
classifier as the gate), and the job's wall time with `Prefer: wait`.

    .venv/bin/python -m bench.believable [--url http://127.0.0.1:8000] --model cgan@v1 --model cvae@v1 \
        [--tau 0.5] [--n 16] [--attempts 4] [--sheets docs/generators/believable]

`--sheets` also saves each job's contact sheet there (`<model>-<tau>-<prompt>.png`), to look at.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import requests

from bench.local import local_storage

PROMPTS = ["black short sleeve jumpsuit", "black dress", "blue kurta", "red dress", "white sneakers",
           "navy blue tshirt"]


def generate(session: requests.Session, url: str, job_input: dict) -> tuple[dict, float]:
    started = time.perf_counter()
    response = session.post(f"{url}/v1/jobs", json={"type": "generate_images", "input": job_input},
                            headers={"Prefer": "wait=300"}, timeout=330)
    response.raise_for_status()
    job = response.json()
    while job["status"] in ("queued", "running"):  # a wait that ran out: poll to the end
        time.sleep(0.5)
        job = session.get(f"{url}/v1/jobs/{job['id']}", timeout=30).json()
    elapsed = time.perf_counter() - started
    if job["status"] != "succeeded":
        raise RuntimeError(f"generate_images job {job['id']} {job['status']}: {job.get('error')}")
    return job, elapsed


def type_confidence(output: dict) -> float | None:
    """Mean confidence of the requested type over the returned images (the type is the condition the
    interpreter named first, as the gate reads it)."""
    head = next(iter(output.get("interpreted", {}) or {}), None)
    values = [image["confidence"][head] for image in output["images"] if head in image.get("confidence", {})]
    return statistics.fmean(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("ATELIER_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--model", action="append", required=True, help="a model version, e.g. cgan@v1")
    parser.add_argument("--tau", type=float, action="append", help="min_confidence values (default 0.5)")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--attempts", type=int, default=4)
    parser.add_argument("--prompt", action="append", help="default: the six first prompts")
    parser.add_argument("--sheets", type=Path)
    parser.add_argument("--var", type=Path, default=Path("var"), help="the local service's store (for --sheets)")
    args = parser.parse_args()
    storage = local_storage(args.var) if args.sheets else None
    session = requests.Session()
    taus = [None, *(args.tau or [0.5])]
    print(f"{date.today()}, {platform.node()}, {os.cpu_count()} CPUs, n={args.n}, max_attempts={args.attempts}\n")
    print("| model | prompt | min_confidence | returned / asked | drawn | rejected | mean type confidence | "
          "seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.model:
        generate(session, args.url, {"model": model, "prompt": PROMPTS[0], "n": 1})  # warm: model and judge loaded
        for prompt in args.prompt or PROMPTS:
            for tau in taus:
                job_input = {"model": model, "prompt": prompt, "n": args.n, "seed": 0}
                if tau is not None:
                    job_input |= {"min_confidence": tau, "max_attempts": args.attempts}
                job, seconds = generate(session, args.url, job_input)
                out = job["output"]
                selection = out.get("selection", {})
                confidence = type_confidence(out)
                print(f"| {model} | {prompt} | {'–' if tau is None else tau} | {len(out['images'])} / {args.n} | "
                      f"{selection.get('drawn', args.n)} | {selection.get('rejected', '–')} | "
                      f"{'–' if confidence is None else f'{confidence:.3f}'} | {seconds:.1f} |", flush=True)
                if args.sheets and "contact_sheet" in out:
                    args.sheets.mkdir(parents=True, exist_ok=True)
                    name = f"{model.replace('@', '-')}-{'all' if tau is None else tau}-{prompt.replace(' ', '-')}.png"
                    (args.sheets / name).write_bytes(storage.get(out["contact_sheet"]["key"]))


if __name__ == "__main__":
    main()

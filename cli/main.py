"""The `atelier` command: submit, similar, status, wait, cancel, list, download, models (and keygen,
the one command that works offline: it makes a key and the hashed entry an operator configures)."""

from __future__ import annotations

import base64
import json
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from cli.client import AtelierClient, CliError
from shared.api_keys import hash_key, new_key

TERMINAL = {"succeeded": 0, "failed": 1, "canceled": 5}  # exit codes of `wait`


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _print_job(job: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(job, indent=2))
        return
    progress = job.get("progress") or {}
    line = f"{job['id']}  {job['type']}  {job['status']}  {progress.get('fraction', 0) * 100:.0f}%"
    if progress.get("message"):
        line += f"  {progress['message']}"
    click.echo(line)
    if job.get("error"):
        click.echo(f"error: {job['error']['code']}: {job['error']['message']}", err=True)


@click.group()
@click.option("--url", envvar="ATELIER_URL", default="http://127.0.0.1:8000", show_default=True,
              help="the Atelier API (env ATELIER_URL)")
@click.option("--key", envvar="ATELIER_API_KEY", default=None, help="API key (env ATELIER_API_KEY)")
@click.pass_context
def cli(ctx: click.Context, url: str, key: str | None) -> None:
    """Atelier from the command line: generate product images and copy, train models, fetch results."""
    ctx.obj = AtelierClient(url, key)


@cli.command()
@click.argument("job_type", metavar="TYPE", type=click.Choice(["generate_images", "describe", "train", "hybrid",
                                                             "traverse", "augment", "import_dataset",
                                                             "similar"]))
@click.option("--prompt", "-p", help="free text, e.g. 'black short sleeve jumpsuit'")
@click.option("-n", "n", type=int, help="how many images / descriptions")
@click.option("--seed", type=int)
@click.option("--model", "-m", help="a version such as cgan@v2 (default: the active one)")
@click.option("--family", help="image family whose active version to use, or the family to train")
@click.option("--dataset", help="train/augment: the dataset")
@click.option("--preset", type=click.Choice(["tiny", "cpu", "gpu"]), help="train: size preset")
@click.option("--descriptions", type=int, help="generate_images: describe the first k images")
@click.option("--min-confidence", type=click.FloatRange(0, 1),
              help="generate_images: only images the classifier gives at least this for the type")
@click.option("--max-minutes", type=float, help="train: time budget in minutes")
@click.option("--steps", type=click.IntRange(1, 200), help="generate_images/augment: sampler steps (diffusion)")
@click.option("--guidance", type=click.FloatRange(0, 10), help="generate_images/augment: guidance scale (diffusion)")
@click.option("--set", "-s", "settings", multiple=True, metavar="FIELD=VALUE",
              help="any other input field; VALUE is read as JSON when it parses (-s epochs=3 -s sampling='{...}')")
@click.option("--input", "input_json", help="the whole input as JSON (options above override it)")
@click.option("--webhook", help="URL called when the job ends")
@click.option("--idempotency-key", help="retrying with the same key returns the same job")
@click.option("--wait", "wait_", is_flag=True, help="wait for the job with a progress bar")
@click.option("--json", "as_json", is_flag=True, help="print the job as JSON")
@click.pass_obj
def submit(client: AtelierClient, job_type: str, prompt: str | None, n: int | None, seed: int | None,
           model: str | None, family: str | None, dataset: str | None, preset: str | None,
           descriptions: int | None, min_confidence: float | None, max_minutes: float | None,
           steps: int | None, guidance: float | None, settings: tuple[str, ...], input_json: str | None,
           webhook: str | None, idempotency_key: str | None, wait_: bool, as_json: bool) -> None:
    """Submit a job of TYPE."""
    try:
        job_input: dict[str, Any] = json.loads(input_json) if input_json else {}
    except json.JSONDecodeError as exc:
        raise CliError(f"--input is not JSON: {exc}") from exc
    given = {"prompt": prompt, "n": n, "seed": seed, "model": model, "family": family, "dataset": dataset,
             "preset": preset, "descriptions": descriptions, "min_confidence": min_confidence,
             "max_minutes": max_minutes}
    job_input.update({k: v for k, v in given.items() if v is not None})
    sampling = {k: v for k, v in (("steps", steps), ("guidance", guidance)) if v is not None}
    if sampling:
        job_input["sampling"] = {**job_input.get("sampling", {}), **sampling}
    for item in settings:
        field, sep, text = item.partition("=")
        if not sep or not field:
            raise CliError(f"--set takes FIELD=VALUE, not {item!r}")
        job_input[field] = _value(text)
    body: dict[str, Any] = {"type": job_type, "input": job_input}
    if webhook:
        body["webhook"] = webhook
    job = client.submit(body, idempotency_key)
    if wait_:
        job = _follow(client, job)
    _print_job(job, as_json)
    if wait_:
        sys.exit(TERMINAL.get(job["status"], 0))


@cli.command()
@click.option("--item", help="a catalog item id")
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="a JPEG or PNG photo")
@click.option("-k", "k", type=click.IntRange(1, 50), default=5, show_default=True, help="how many neighbours")
@click.option("--dataset", help="default: the catalog the classifier was trained on")
@click.option("--classifier", help="a classifier version (default: the active one)")
@click.option("--json", "as_json", is_flag=True, help="print the job as JSON")
@click.pass_obj
def similar(client: AtelierClient, item: str | None, image: Path | None, k: int, dataset: str | None,
            classifier: str | None, as_json: bool) -> None:
    """The catalog items that look most like a catalog item (--item) or a photo (--image)."""
    if (item is None) == (image is None):
        raise CliError("give exactly one of --item or --image")
    job_input: dict[str, Any] = {"k": k}
    if item is not None:
        job_input["item"] = item
    else:
        job_input["image"] = base64.b64encode(image.read_bytes()).decode()
    job_input.update({f: v for f, v in (("dataset", dataset), ("classifier", classifier)) if v})
    job = client.submit({"type": "similar", "input": job_input}, wait_s=30)
    if job["status"] not in TERMINAL:
        job = _follow(client, job, 120)
    if as_json or job["status"] != "succeeded":
        _print_job(job, as_json)
        sys.exit(TERMINAL.get(job["status"], 0))
    out = job["output"]
    for head, guess in out["predicted"].items():
        click.echo(f"{head}: {guess['value']} ({guess['confidence']:.0%})")
    for n in out["neighbours"]:
        click.echo(f"{n['similarity']:.3f}  {n['id']:<10} {n.get('articleType', ''):<16} "
                   f"{n.get('baseColour', ''):<12} {n['title']}")


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def status(client: AtelierClient, job_id: str, as_json: bool) -> None:
    """A job's status and progress."""
    _print_job(client.job(job_id), as_json)


def _follow(client: AtelierClient, job: dict, timeout_s: float | None = None) -> dict:
    deadline = time.monotonic() + timeout_s if timeout_s else None
    with tqdm(total=100, desc=f"{job['type']} {job['id'][-8:]}", unit="%", file=sys.stderr,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}") as bar:
        while job["status"] not in TERMINAL:
            if deadline and time.monotonic() > deadline:
                raise CliError(f"job {job['id']} is still {job['status']} after {timeout_s:.0f} s", 6)
            time.sleep(0.5)
            job = client.job(job["id"], wait_s=2 if job["status"] == "queued" else 0)
            progress = job.get("progress") or {}
            bar.n = round(progress.get("fraction", 0) * 100, 1)
            bar.set_postfix_str(f"{job['status']} {progress.get('message', '')[:50]}")
    return job


@cli.command()
@click.argument("job_id")
@click.option("--timeout", type=float, help="give up after this many seconds (exit 6)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def wait(client: AtelierClient, job_id: str, timeout: float | None, as_json: bool) -> None:
    """Wait for a job with a progress bar. Exit 0 succeeded, 1 failed, 5 canceled."""
    job = _follow(client, client.job(job_id), timeout)
    _print_job(job, as_json)
    sys.exit(TERMINAL[job["status"]])


@cli.command()
@click.argument("job_id")
@click.pass_obj
def cancel(client: AtelierClient, job_id: str) -> None:
    """Cancel a queued job, or ask a running one to stop."""
    job = client.json("POST", f"/v1/jobs/{job_id}/cancel")
    click.echo(f"{job['id']}  {'canceled' if job['status'] == 'canceled' else 'cancel requested'}")


@cli.command(name="list")
@click.option("--status", "status_", type=click.Choice(["queued", "running", "succeeded", "failed", "canceled"]))
@click.option("--type", "job_type")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def list_jobs(client: AtelierClient, status_: str | None, job_type: str | None, limit: int, as_json: bool) -> None:
    """Your jobs, newest first."""
    params = {k: v for k, v in {"status": status_, "type": job_type, "limit": limit}.items() if v}
    jobs = client.json("GET", "/v1/jobs", params=params)["jobs"]
    if as_json:
        click.echo(json.dumps(jobs, indent=2))
        return
    for job in jobs:
        model = job.get("model") or ""
        click.echo(f"{job['id']}  {job['created_at'][:19]}  {job['type']:<16} {job['status']:<10} {model}")


@cli.command()
@click.argument("job_id")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("."), show_default=True,
              help="folder to write into")
@click.option("--extract/--zip", default=True, show_default=True, help="unpack the zip, or keep it")
@click.pass_obj
def download(client: AtelierClient, job_id: str, output: Path, extract: bool) -> None:
    """Download a succeeded job's outputs (one zip from the service)."""
    output.mkdir(parents=True, exist_ok=True)
    target = output / f"atelier-{job_id}.zip"
    response = client.request("GET", f"/v1/jobs/{job_id}/archive", stream=True)
    with target.open("wb") as f:
        for chunk in response.iter_content(1 << 16):
            f.write(chunk)
    if not extract:
        click.echo(str(target))
        return
    with zipfile.ZipFile(target) as archive:
        root = output.resolve()
        for name in archive.namelist():  # never write outside the folder, whatever the zip says
            if not (root / name).resolve().is_relative_to(root):
                raise CliError(f"refusing to unpack {name!r}: it points outside {root}")
        archive.extractall(root)
    target.unlink()
    click.echo(str(output / job_id))


@cli.command()
@click.option("--family")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def models(client: AtelierClient, family: str | None, as_json: bool) -> None:
    """Model versions: dataset, headline metric, which one is active."""
    found = client.json("GET", "/v1/models", params={"family": family} if family else {})["models"]
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    for m in found:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in list(m["metrics"].items())[:3] if isinstance(v, int | float))
        click.echo(f"{m['ref']:<16} {'active' if m['active'] else '':<7} {m['dataset']:<16} {metrics}")


@cli.command()
@click.option("--name", required=True, help="who the key belongs to (owns its jobs)")
@click.option("--admin", is_flag=True)
@click.option("--max-queued", type=int)
def keygen(name: str, admin: bool, max_queued: int | None) -> None:
    """Make an API key (offline): give the key to its owner, add the entry to ATELIER_API_KEYS."""
    key = new_key()
    entry: dict[str, Any] = {"name": name, "sha256": hash_key(key)}
    if admin:
        entry["admin"] = True
    if max_queued is not None:
        entry["max_queued"] = max_queued
    click.echo(f"key (give it to {name}; it is not stored anywhere): {key}")
    click.echo(f"entry for ATELIER_API_KEYS: {json.dumps(entry)}")


def main() -> None:
    try:
        cli(standalone_mode=False)
    except CliError as exc:
        click.echo(f"atelier: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()

"""The `augment` job (issue 5): top up a dataset's rare classes with synthetic images that pass the
gate, under `augmented/<dataset>/<date>/`.

Idempotent per dataset and date, whoever submits it (the nightly schedule or a person):
- `plan.json` is written first and pins everything a rerun must repeat: the models, the gate's
  thresholds, the rare classes and how many each gets, and the classes not published and why;
- each class's candidates have seeds derived from (dataset, date, class), so a rerun draws the same
  images under the same keys, and `classes/<class>.json` records a finished class;
- `manifest.jsonl`, `manifest.csv` and, last, `summary.json` are written from the class records;
  a run that finds `summary.json` returns it.
A redelivered or rerun job therefore resumes at the first unfinished class and never writes an
image twice under two names.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np

from shared.errors import JobCanceled, JobFailure
from shared.families import facts
from shared.registry import model_prefix
from shared.schemas import AUGMENT_FAMILIES, AttributesInput, AugmentInput, Job, ModelVersion
from shared.storage import PutItem
from worker.augmentation import GateRule, Judgement, RarePolicy, class_seed, csv_safe, judge, unique_slugs
from worker.context import WorkerContext
from worker.describing import request_for, write_copy
from worker.families import IMAGE_FAMILIES, SampleRequest
from worker.handlers.common import Progress, ShouldStop, scaled, write_manifest
from worker.images import png_bytes, to_uint8
from worker.models import lm

log = logging.getLogger(__name__)
BATCH = 64  # candidates generated and judged at a time
MANIFEST_COLUMNS = ("synthetic_id", "class", "colour", "model", "seed", "confidence", "colour_confidence",
                    "nearest_real_id", "nearest_real_distance", "description", "key")
NOT_HELPFUL, LOW_ADHERENCE = "synthetic_data_does_not_help", "generator_adherence_low"


def root_of(dataset: str, day: str) -> str:
    return f"augmented/{dataset}/{day}/"


def augment(ctx: WorkerContext, job: Job, progress: Progress, should_stop: ShouldStop) -> dict:
    inp = AugmentInput(**job.input)
    day = inp.date or ctx.settings.today().isoformat()
    root = root_of(inp.dataset, day)
    with _run_lock(ctx, inp.dataset, day, job.id):
        if ctx.storage.exists(root + "summary.json"):  # this date's run is complete: the same answer again
            output = {**ctx.storage.get_json(root + "summary.json"), "reused": True}
            write_manifest(ctx.storage, job, output, seeds={}, model=output["model"])
            return output
        resumed = ctx.storage.exists(root + "plan.json")  # an earlier run's plan wins over this input
        plan = (ctx.storage.get_json(root + "plan.json") if resumed
                else _make_plan(ctx, inp, day, job.id, scaled(progress, 0.0, 0.1), should_stop))
        output = _carry_out(ctx, job, plan, root, progress, should_stop)
        return {**output, "resumed_plan_of": plan["job_id"]} if resumed else output


@contextmanager
def _run_lock(ctx: WorkerContext, dataset: str, day: str, job_id: str) -> Iterator[None]:
    """One job at a time per dataset and date; the same job (a redelivery) may take it again. Held
    for as long as a batch job may run: a dead holder is recognised by its job's status instead."""
    key = f"atelier:augment-lock:{dataset}:{day}"
    ttl = ctx.settings.batch_time_limit_s + 300
    if not ctx.store.redis.set(key, job_id, nx=True, ex=ttl):
        holder = ctx.store.redis.get(key)
        other = ctx.store.get(holder) if holder and holder != job_id else None
        if other is not None and not other.status.terminal:
            raise JobFailure(f"job {holder} is already augmenting {dataset} for {day}; this run would repeat it",
                             code="augment_in_progress", details={"job_id": holder})
        ctx.store.redis.set(key, job_id, ex=ttl)
    try:
        yield
    finally:
        if ctx.store.redis.get(key) == job_id:
            ctx.store.redis.delete(key)


def _make_plan(ctx: WorkerContext, inp: AugmentInput, day: str, job_id: str, progress: Progress,
               should_stop: ShouldStop) -> dict:
    settings = ctx.settings
    model = (ctx.registry.resolve(inp.model, default_family="cgan") if inp.model
             else ctx.registry.for_dataset(AUGMENT_FAMILIES, inp.dataset))
    if model is None:
        raise JobFailure(f"no image model was trained on {inp.dataset}", code="no_model_for_dataset",
                         field="input.dataset")
    judge_meta = ctx.registry.for_dataset(("classifier",), inp.dataset, model.vocabulary)
    if judge_meta is None:
        raise JobFailure(f"no classifier was trained on {inp.dataset}; the gate needs one", code="no_classifier",
                         field="input.dataset")
    roles = model.roles or {"type": next(iter(model.vocabulary))}
    kind, colour = roles["type"], roles.get("colour")
    dataset = ctx.image_dataset(inp.dataset, progress)
    index = ctx.feature_index(inp.dataset, judge_meta.ref, progress=progress)
    names = model.vocabulary[kind]
    counts = {n: int(c) for n, c in zip(names, np.bincount(dataset.train.conditions[kind], minlength=len(names)),
                                        strict=True)}
    considered = {n: c for n, c in counts.items() if inp.classes is None or n in inp.classes}
    policy = RarePolicy(settings.augment_min_count, settings.augment_median_share,
                        inp.max_per_class or settings.augment_max_per_class)
    target = policy.target(counts)
    adherence = _per_class_adherence(ctx, model)
    min_adherence = (inp.min_class_adherence if inp.min_class_adherence is not None
                     else settings.augment_min_class_adherence)
    verdicts = _verdicts(ctx, inp.dataset)
    classes: dict[str, dict[str, Any]] = {}
    rare = policy.rare(considered)
    slugs = unique_slugs(list(rare))
    for name, requested in rare.items():
        entry: dict[str, Any] = {"count": counts[name], "requested": requested, "slug": slugs[name],
                                 "value": names.index(name)}
        if name in verdicts and not verdicts[name].get("helps", True):
            entry["skipped"] = {"reason": NOT_HELPFUL, "evidence": verdicts[name]}
        elif name in adherence and adherence[name] < min_adherence:
            entry["skipped"] = {"reason": LOW_ADHERENCE, "adherence": adherence[name], "minimum": min_adherence}
        if colour:  # colours drawn as the class's real items have them
            rows = dataset.train.conditions[kind] == entry["value"]
            share = np.bincount(dataset.train.conditions[colour][rows], minlength=len(model.vocabulary[colour]))
            entry["colours"] = (share / share.sum()).round(6).tolist()
        classes[name] = entry
    lm_version = ctx.registry.active("lm") if inp.descriptions else None
    plan = {
        "dataset": inp.dataset, "date": day, "job_id": job_id, "model": model.ref, "family": model.family,
        "classifier": judge_meta.ref, "description_model": lm_version.ref if lm_version else None,
        "description_dataset": lm_version.dataset if lm_version else None, "roles": roles,
        "vocabulary": model.vocabulary,
        "rule": {"min_confidence": inp.min_confidence if inp.min_confidence is not None
                 else settings.augment_min_confidence,
                 "near_duplicate_quantile": settings.augment_near_duplicate_quantile,
                 "min_distance": index.distance_at(settings.augment_near_duplicate_quantile)},
        "rare": {"min_count": policy.min_count, "median_share": policy.median_share, "target": target,
                 "max_per_class": policy.max_per_class, "median": float(np.median(list(counts.values())))},
        "max_attempts": settings.augment_max_attempts, "counts": counts, "classes": classes,
        # how candidates are drawn; family-only fields the plan's family does not read are left out
        "sampling": {"mode": inp.sampling.mode, "spread": inp.sampling.spread,
                     **inp.sampling.family_options(facts(model.family).sampling)},
    }
    if should_stop():  # canceled while the index was built: leave no plan to bind the next run
        raise JobCanceled()
    ctx.storage.put_json(root_of(inp.dataset, day) + "plan.json", plan)
    return plan


def _per_class_adherence(ctx: WorkerContext, model: ModelVersion) -> dict[str, float]:
    """The generator's evaluated type adherence per class (empty when it was never evaluated)."""
    key = model_prefix(model.family, model.version) + "metrics.json"
    metrics = ctx.storage.get_json(key) if ctx.storage.exists(key) else {}
    return (metrics.get("evaluation") or {}).get("per_class_adherence") or {}


def _verdicts(ctx: WorkerContext, dataset: str) -> dict[str, dict]:
    """Per class, whether synthetic data helped a classifier (bench/augment_eval.py --record)."""
    key = f"augmented/{dataset}/verdicts.json"
    return ctx.storage.get_json(key).get("classes", {}) if ctx.storage.exists(key) else {}


def _carry_out(ctx: WorkerContext, job: Job, plan: dict, root: str, progress: Progress,
               should_stop: ShouldStop) -> dict:
    todo = {n: c for n, c in plan["classes"].items() if "skipped" not in c}
    records: dict[str, dict] = {}
    for i, (name, entry) in enumerate(todo.items()):
        key = root + f"classes/{entry['slug']}.json"
        if ctx.storage.exists(key):  # finished by an earlier attempt
            records[name] = ctx.storage.get_json(key)
            continue
        if should_stop():
            raise JobCanceled()
        step = scaled(progress, 0.1 + 0.85 * i / len(todo), 0.1 + 0.85 * (i + 1) / len(todo))
        records[name] = _augment_class(ctx, plan, root, name, entry, step, should_stop)
        ctx.storage.put_json(key, records[name])
    rows = [row for record in records.values() for row in record["rows"]]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    # cells come from uploaded class names and generated copy: never a formula in a spreadsheet
    writer.writerows({k: csv_safe(v) for k, v in {**r, "description": (r.get("description") or {}).get("text", "")
                                                 }.items()} for r in rows)
    ctx.storage.put_many([
        PutItem(root + "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode(), "application/x-ndjson"),
        PutItem(root + "manifest.csv", buffer.getvalue().encode(), "text/csv"),
    ])
    classes = {name: records[name]["summary"] if name in records else {"requested": e["requested"], **e["skipped"]}
               for name, e in plan["classes"].items()}
    output = {
        "dataset": plan["dataset"], "date": plan["date"], "model": plan["model"], "classifier": plan["classifier"],
        "description_model": plan["description_model"], "rule": plan["rule"], "rare": plan["rare"],
        "classes": classes, "not_published": {n: e["skipped"]["reason"] for n, e in plan["classes"].items()
                                              if "skipped" in e},
        "totals": {"requested": sum(c["requested"] for c in classes.values()),
                   "kept": sum(c.get("kept", 0) for c in classes.values()),
                   "generated": sum(c.get("generated", 0) for c in classes.values())},
        "files": {"jsonl": {"key": root + "manifest.jsonl"}, "csv": {"key": root + "manifest.csv"},
                  "summary": {"key": root + "summary.json"}, "plan": {"key": root + "plan.json"}},
    }
    ctx.storage.put_json(root + "summary.json", output)  # last: this date's run is complete
    write_manifest(ctx.storage, job, output, seeds={"per_class": {n: class_seed(plan["dataset"], plan["date"], n)
                                                                        for n in todo}}, model=plan["model"])
    return output


def sample_request(plan: dict, cond: dict[str, int], seeds: list[int]) -> SampleRequest:
    """The plan's sampling settings (plans written before they were recorded: the defaults)."""
    sampling = dict(plan.get("sampling") or {})
    mode, spread = sampling.pop("mode", "auto"), sampling.pop("spread", 0.5)
    return SampleRequest(cond, seeds, mode=mode, spread=spread, options=sampling)


def _augment_class(ctx: WorkerContext, plan: dict, root: str, name: str, entry: dict, progress: Progress,
                   should_stop: ShouldStop) -> dict:
    """Generate, judge and keep candidates for one class until it has what it asked for or the
    attempts run out; write the kept images and their descriptions."""
    model, judge_model = ctx.load_model(plan["model"]), ctx.load_model(plan["classifier"])
    index = ctx.feature_index(plan["dataset"], plan["classifier"])
    kind, colour = plan["roles"]["type"], plan["roles"].get("colour")
    rule = GateRule(plan["rule"]["min_confidence"], plan["rule"]["min_distance"])
    family = IMAGE_FAMILIES[plan["family"]]
    wanted, limit = entry["requested"], entry["requested"] * plan["max_attempts"]
    base = class_seed(plan["dataset"], plan["date"], name)
    shares = np.array(entry.get("colours", [1.0])) / sum(entry.get("colours", [1.0]))  # stored rounded
    kept: list[tuple[int, np.ndarray, int, int, Judgement]] = []  # (seed, image, colour, row in batch, judgement)
    rejected: Counter[str] = Counter()
    generated = 0
    while len(kept) < wanted and generated < limit:
        if should_stop():
            raise JobCanceled()
        seeds = [base + generated + j for j in range(min(BATCH, limit - generated))]
        colours = [int(np.random.default_rng(s).choice(len(shares), p=shares)) if colour else -1 for s in seeds]
        images: np.ndarray | None = None
        for value in sorted(set(colours)):  # one sampling call per colour
            rows = [j for j, c in enumerate(colours) if c == value]
            cond = {kind: entry["value"], **({colour: value} if colour else {})}
            drawn = to_uint8(family.sample(model, sample_request(plan, cond, [seeds[j] for j in rows]), ctx.device))
            if images is None:
                images = np.zeros((len(seeds), *drawn.shape[1:]), dtype=np.uint8)
            images[rows] = drawn
        target = {kind: np.full(len(seeds), entry["value"]), **({colour: np.array(colours)} if colour else {})}
        verdict = judge(images, target, kind, judge_model, index, rule, ctx.device)
        for j, reason in enumerate(verdict.reasons):
            if reason:
                rejected[reason] += 1
            elif len(kept) < wanted:
                kept.append((seeds[j], images[j], colours[j], j, verdict))
        generated += len(seeds)
        progress(max(len(kept) / wanted, generated / limit) * 0.8, f"{name}: {len(kept)}/{wanted} kept of {generated}")

    colour_names = plan["vocabulary"].get(colour, []) if colour else []
    rows: list[dict[str, Any]] = []
    items = []
    for seed, image, c, j, verdict in kept:
        synthetic_id = f"syn-{plan['date']}-{entry['slug']}-{seed}"
        key = root + f"images/{entry['slug']}/{synthetic_id}.png"
        items.append(PutItem(key, partial(png_bytes, image), "image/png"))
        rows.append({"synthetic_id": synthetic_id, "class": name, "colour": colour_names[c] if colour else None,
                     "model": plan["model"], "classifier": plan["classifier"], "seed": seed,
                     "confidence": round(float(verdict.confidence[kind][j]), 4),
                     "colour_confidence": round(float(verdict.confidence[colour][j]), 4) if colour else None,
                     "nearest_real_id": verdict.nearest_id[j],
                     "nearest_real_distance": round(float(verdict.distance[j]), 6), "key": key})
    ctx.storage.put_many(items)
    if plan["description_model"] and rows:
        progress(0.85, f"{name}: describing {len(rows)} images")
        _describe(ctx, plan, rows)
    summary = {"count": entry["count"], "requested": wanted, "generated": generated, "kept": len(rows),
               "rejected": dict(sorted(rejected.items())), "shortfall": wanted - len(rows)}
    return {"summary": summary, "rows": rows}


def _describe(ctx: WorkerContext, plan: dict, rows: list[dict[str, Any]]) -> None:
    """Copy for each kept image, written from its class and colour with the image's seed."""
    by_colour: dict[str | None, list[dict]] = {}
    for row in rows:
        by_colour.setdefault(row["colour"], []).append(row)
    for colour, group in by_colour.items():
        request = request_for(ctx, plan["description_dataset"], None,
                              AttributesInput(type=group[0]["class"], colour=colour))
        copies = write_copy(ctx, plan["description_model"], plan["description_dataset"], request,
                            [r["seed"] for r in group], lm.SamplingParams())
        for row, copy in zip(group, copies, strict=True):
            row["description"] = {"text": copy["text"], "adherence": copy["adherence"]["score"],
                                  "copy_flagged": copy["copy"]["flagged"], "model": plan["description_model"]}

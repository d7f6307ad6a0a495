"""The `train` job for family `lm`: either a byte-level BPE learned on the training copy and a GPT-2
trained from a preset, or a pretrained GPT-2 from a local directory (`base_model`) fine-tuned; then a
model version under models/lm/<version>/ (weights with the tokenizer inside, tokenizer.json, config,
metrics with held-out perplexity per epoch, a curve PNG, sample copy)."""

from __future__ import annotations

from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

from shared.errors import JobFailure
from shared.registry import model_prefix, parse_ref
from shared.schemas import Job, TrainInput
from shared.settings import Settings
from worker.context import WorkerContext
from worker.datasets.descriptions import vary_context
from worker.datasets.store import load_pairs
from worker.handlers.common import (
    Progress,
    ShouldStop,
    StorageCheckpoint,
    claim_model_version,
    scaled,
    train_params,
)
from worker.handlers.publishing import Version, publish_version
from worker.models import lm
from worker.training.lm_trainer import train_lm

SAMPLE_CONTEXTS = 6


def train_language_model(ctx: WorkerContext, job: Job, progress: Progress, should_stop: ShouldStop) -> dict:
    inp = TrainInput(**job.input)
    ref = claim_model_version(ctx, job, "lm")
    train, test = load_pairs(inp.dataset, ctx.storage, ctx.settings, scaled(progress, 0.0, 0.03))
    preset = lm.PRESETS[inp.preset.value]
    config = replace(lm.LMConfig(), **preset["model"])
    defaults = preset["train"]
    params = train_params(inp, defaults)  # the LM trainer has no bf16 path yet
    if inp.base_model:
        progress(0.03, f"loading the base model {inp.base_model}")
        build = partial(lm.from_pretrained, base_model_dir(ctx.settings, inp.base_model), config.n_positions)
    else:
        progress(0.03, "learning the tokenizer")
        # Deterministic for the same training split, so a resumed run gets the same token ids.
        tokenizer = lm.train_tokenizer([f"{c} {d}" for c, d in train], config.vocab_size)
        build = partial(lm.fresh, config, tokenizer)
    try:
        result = train_lm(build, params, train, test, device=ctx.device, progress=scaled(progress, 0.05, 0.9),
                          should_stop=should_stop, vary_context=vary_context,
                          checkpoint=StorageCheckpoint(ctx.storage, f"jobs/{job.id}/checkpoint.pt"))
    except lm.BaseModelError as exc:
        raise JobFailure(str(exc), code="invalid_base_model", field="input.base_model") from exc
    progress(0.92, "writing the model version")
    model = result.model
    samples = [{"context": c, "reference": d,
                "generated": lm.generate(model, c, [params.seed], lm.SamplingParams(max_tokens=60), ctx.device)[0]}
               for c, d in test[:SAMPLE_CONTEXTS]]
    prefix = model_prefix(*parse_ref(ref))
    version = Version(
        ref=ref, checkpoint=lm.to_checkpoint(model),
        config={"model": asdict(model.config), "train": asdict(params), "base_model": inp.base_model},
        metrics={"train_examples": min(len(train), params.max_train_examples or len(train))},
        headline={"test_perplexity": result.final.get("test_perplexity"),
                  "train_perplexity": result.final.get("train_perplexity"), "base_model": inp.base_model},
        vocabulary={}, curves={"train": "train_perplexity", "held-out": "test_perplexity"},
        curve_unit="perplexity per token",
        files={"tokenizer.json": (model.tokenizer.to_str().encode(), "application/json")},
        documents={"samples.json": samples}, artifacts={"tokenizer": {"key": prefix + "tokenizer.json"}},
        output={"samples": samples})
    return publish_version(ctx, job, inp, params, result, version)


def base_model_dir(settings: Settings, name: str) -> Path:
    """A pretrained base by name: a directory directly under ATELIER_BASE_MODELS (the name is
    checked at submit to be one path segment, so no other part of the disk is reachable)."""
    root = settings.base_models_dir
    directory = root / name if root else None
    if directory is None or not directory.is_dir():
        available = sorted(p.name for p in root.iterdir() if p.is_dir()) if root and root.is_dir() else []
        where = f"under {root}" if root else "(ATELIER_BASE_MODELS is not set)"
        raise JobFailure(f"no base model {name!r} {where}; available: {available or 'none'}",
                         code="base_model_not_found", field="input.base_model", details={"available": available})
    return directory

"""Turning what a job asks for (explicit conditions, a prompt or a catalog item) into a model
version's condition indices, shared by generate_images, hybrid and traverse."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.conditions import resolve_conditions
from shared.errors import JobFailure
from shared.registry import parse_ref
from shared.schemas import Endpoint, Job, ModelVersion
from worker.context import WorkerContext
from worker.prompts import not_understood


def pinned_model(ctx: WorkerContext, job: Job | None, requested: str | None) -> ModelVersion:
    """The job's model version (pinned at submit), or `requested` for a second model it uses."""
    ref = (job.model if job else None) or requested
    if not ref:
        raise JobFailure("the job has no model version", code="no_active_model")
    family, version = parse_ref(ref)
    meta = ctx.registry.get(family, version)
    if meta is None:
        raise JobFailure(f"model {ref} no longer exists", code="model_not_found")
    return meta


def roles_of(meta: ModelVersion) -> dict[str, str]:
    return meta.roles or {"type": sorted(meta.vocabulary)[0]}


def names_of(meta: ModelVersion, cond: dict[str, int]) -> dict[str, str]:
    return {k: meta.vocabulary[k][v] for k, v in cond.items()}


def interpret_prompt(ctx: WorkerContext, meta: ModelVersion, prompt: str, *, allow_approximate: bool,
                     field_name: str = "input.prompt") -> tuple[dict[str, int], dict[str, Any]]:
    """A prompt -> condition indices and the public interpretation; fails `prompt_not_understood`
    when the product type matches nothing well enough, unless approximate answers are allowed."""
    roles = roles_of(meta)
    vocab = ctx.vocabulary(meta.ref, meta.vocabulary, roles)
    result = ctx.interpreter.interpret(prompt, vocab, colour_counts=meta.joint_counts)
    if not result.understood and not (allow_approximate and result.type is not None):
        error = not_understood(prompt, result, roles)
        error.field = field_name
        raise error
    public = result.public(roles)
    public["approximate"] = not result.understood
    cond = {roles["type"]: meta.vocabulary[roles["type"]].index(result.type.value)}
    if roles.get("colour") and result.colour is not None:
        cond[roles["colour"]] = meta.vocabulary[roles["colour"]].index(result.colour.value)
    for other in meta.vocabulary:  # conditions a prompt cannot name: the first value
        cond.setdefault(other, 0)
    return cond, public


@dataclass
class Resolved:
    """One end of a hybrid or the start of a traversal."""

    cond: dict[str, int]
    names: dict[str, str]
    item: str | None = None
    image: np.ndarray | None = None  # [H, W, C] uint8: the real catalog photo
    interpreted: dict[str, Any] | None = None

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {"conditions": self.names}
        if self.item:
            out["item"] = self.item
        if self.interpreted:
            out["interpreted"] = self.interpreted
        return out


def resolve_endpoint(ctx: WorkerContext, meta: ModelVersion, endpoint: Endpoint, field_name: str, *,
                     allow_approximate: bool) -> Resolved:
    if endpoint.conditions is not None:
        cond = resolve_conditions(meta.vocabulary, endpoint.conditions, field_prefix=f"{field_name}.conditions")
        return Resolved(cond, names_of(meta, cond))
    if endpoint.prompt is not None:
        cond, public = interpret_prompt(ctx, meta, endpoint.prompt, allow_approximate=allow_approximate,
                                        field_name=f"{field_name}.prompt")
        return Resolved(cond, names_of(meta, cond), interpreted=public)
    return catalog_item(ctx, meta, endpoint.item or "", f"{field_name}.item")


def catalog_item(ctx: WorkerContext, meta: ModelVersion, item_id: str, field_name: str) -> Resolved:
    """A real item of the model's training dataset, with its conditions in the model's vocabulary."""
    dataset = ctx.image_dataset(meta.dataset)
    for split in (dataset.train, dataset.test):
        if split.ids is None:
            break
        rows = np.flatnonzero(split.ids == item_id)
        if rows.size:
            row = int(rows[0])
            names = {k: dataset.vocabulary[k][int(v[row])] for k, v in split.conditions.items()}
            try:
                cond = {k: meta.vocabulary[k].index(name) for k, name in names.items()}
            except (KeyError, ValueError) as exc:
                raise JobFailure(f"item {item_id} has conditions {names} that {meta.ref} was not trained on",
                                 code="item_not_supported", field=field_name) from exc
            return Resolved(cond, names, item=item_id, image=split.images[row])
    raise JobFailure(f"no item {item_id!r} in dataset {meta.dataset} (items below the class minimum are not "
                     "imported)", code="item_not_found", field=field_name)

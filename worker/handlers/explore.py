"""Latent-space jobs from the seed documents: `hybrid` (interpolation between two classes or two
catalog items, or style mixing of two items) and `traverse` (one latent dimension swept at a time).

Class ends use the class's mean latent (cvae) or share one latent drawn from the seed (cgan), so
the strip moves between recognisable classes; item ends use the encoder's posterior mean of the
real photo (cvae)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shared.errors import JobFailure
from shared.families import ENCODER_FAMILIES
from shared.schemas import Endpoint, HybridInput, Job, ModelVersion, TraverseInput
from shared.storage import PutItem
from worker.context import WorkerContext
from worker.families import IMAGE_FAMILIES, ImageFamily
from worker.handlers.common import Progress, ShouldStop, write_manifest
from worker.handlers.conditioning import Resolved, pinned_model, resolve_endpoint
from worker.images import grid, png_bytes, to_uint8


def _cond_tensor(cond: dict[str, int], device: Any) -> dict[str, torch.Tensor]:
    return {k: torch.tensor([v], dtype=torch.long, device=device) for k, v in cond.items()}


def _latent(family: ImageFamily, model: Any, end: Resolved, seed: int, device: Any) -> torch.Tensor:
    """[1, latent]: the encoded item, or the family's latent for a class (a cvae's class mean, a
    GAN's prior sample from the seed)."""
    if end.image is not None:
        if family.encode is None:
            raise JobFailure(f"catalog items need a model with an encoder ({', '.join(ENCODER_FAMILIES)}); "
                             f"{family.name} has none", code="item_not_supported", field="input.item")
        x = torch.from_numpy(end.image).to(device).permute(2, 0, 1)[None].float() / 255.0
        return family.encode(model, x, _cond_tensor(end.cond, device))
    return family.latent(model, end.cond, seed, device)


def _slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation keeps intermediate latents at a typical norm for a Gaussian prior."""
    na, nb = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((na * nb).sum(dim=1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    if float(omega.abs().max()) < 1e-4:
        return torch.lerp(a, b, t)
    so = torch.sin(omega)
    return torch.sin((1 - t) * omega) / so * a + torch.sin(t * omega) / so * b


def _save_frames(ctx: WorkerContext, job: Job, images: np.ndarray, sheet: np.ndarray, sheet_name: str,
                 extra: dict[str, np.ndarray]) -> tuple[list[dict], dict, dict]:
    prefix = f"jobs/{job.id}/"
    frames = [PutItem(f"{prefix}frames/{i:02d}.png", png_bytes(img), "image/png") for i, img in enumerate(images)]
    sheet_item = PutItem(prefix + sheet_name, png_bytes(sheet), "image/png")
    sources = {name: PutItem(f"{prefix}sources/{name}.png", png_bytes(img), "image/png") for name, img in extra.items()}
    ctx.storage.put_many([*frames, sheet_item, *sources.values()])
    return ([{"index": i, "key": f.key} for i, f in enumerate(frames)], {"key": sheet_item.key},
            {name: {"key": item.key} for name, item in sources.items()})


@dataclass
class Setup:
    meta: ModelVersion
    family: ImageFamily
    model: Any
    seed: int
    ends: list[Resolved]


def _setup(ctx: WorkerContext, job: Job, inp: HybridInput | TraverseInput, ends: dict[str, Endpoint],
           progress: Progress) -> Setup:
    """The pinned model (loaded once per process) and the job's ends resolved against its vocabulary."""
    meta = pinned_model(ctx, job, inp.model)
    resolved = [resolve_endpoint(ctx, meta, end, f"input.{name}", allow_approximate=inp.allow_approximate)
                for name, end in ends.items()]
    progress(0.1, f"loading {meta.ref}")
    return Setup(meta, IMAGE_FAMILIES[meta.family], ctx.load_model(meta.ref),
                 inp.seed if inp.seed is not None else 0, resolved)


def hybrid(ctx: WorkerContext, job: Job, progress: Progress, should_stop: ShouldStop) -> dict:
    inp = HybridInput(**job.input)
    setup = _setup(ctx, job, inp, {"a": inp.a, "b": inp.b}, progress)
    meta, family, model, seed = setup.meta, setup.family, setup.model, setup.seed
    a, b = setup.ends
    device = ctx.device
    z_a = _latent(family, model, a, seed, device)
    # Style mixing needs two different latents; class-to-class interpolation shares one.
    z_b = _latent(family, model, b, seed + 1 if inp.mode == "style_mix" else seed, device)
    e_a = family.embed(model, _cond_tensor(a.cond, device))
    e_b = family.embed(model, _cond_tensor(b.cond, device))
    progress(0.4, f"decoding ({inp.mode})")
    if inp.mode == "interpolate":
        ts = np.linspace(0.0, 1.0, inp.steps)
        z = torch.cat([_slerp(z_a, z_b, float(t)) for t in ts])
        e = torch.cat([torch.lerp(e_a, e_b, float(t)) for t in ts])
        images = to_uint8(family.decode(model, z, e))
        strip = [images]
        if a.image is not None and b.image is not None:  # the real photos at the two ends
            strip = [a.image[None], images, b.image[None]]
        sheet, sheet_name = grid(np.concatenate(strip), len(np.concatenate(strip))), "strip.png"
        frame_info = {"t": [round(float(t), 4) for t in ts]}
    else:
        # a's latent in a's and b's conditions, then b's latent in b's and a's.
        z = torch.cat([z_a, z_a, z_b, z_b])
        e = torch.cat([e_a, e_b, e_b, e_a])
        images = to_uint8(family.decode(model, z, e))
        sheet, sheet_name = grid(images, 2), "style_mix.png"
        frame_info = {"frames": ["a latent, a conditions", "a latent, b conditions", "b latent, b conditions",
                                 "b latent, a conditions"]}
    progress(0.8, "saving")
    sources = {name: end.image for name, end in (("a", a), ("b", b)) if end.image is not None}
    frames, sheet_ref, source_refs = _save_frames(ctx, job, images, sheet, sheet_name, sources)
    output = {"model": meta.ref, "mode": inp.mode, "a": a.public(), "b": b.public(), "frames": frames,
              "sheet": sheet_ref, **frame_info}
    if source_refs:
        output["sources"] = source_refs
    write_manifest(ctx.storage, job, output, seeds={"base": seed}, model=meta.ref)
    return output


def traverse(ctx: WorkerContext, job: Job, progress: Progress, should_stop: ShouldStop) -> dict:
    inp = TraverseInput(**job.input)
    setup = _setup(ctx, job, inp, {"start": inp.start}, progress)
    meta, family, model, seed = setup.meta, setup.family, setup.model, setup.seed
    (start,) = setup.ends
    device = ctx.device
    latent_dim = model.config.latent_dim
    if inp.dims and max(inp.dims) >= latent_dim:
        raise JobFailure(f"{meta.ref} has latent dimensions 0..{latent_dim - 1}", code="validation_error",
                         field="input.dims")
    z0 = _latent(family, model, start, seed, device)
    std = getattr(model, "latent_std", None)
    if inp.dims:
        dims = list(inp.dims)
    elif std is not None and float(std.sum()) > 0:  # the dimensions the encoder actually uses
        dims = torch.argsort(std, descending=True)[:8].tolist()
    else:
        dims = list(range(min(8, latent_dim)))
    values = np.linspace(-inp.span, inp.span, inp.steps)
    rows = []
    for d in dims:
        z = z0.repeat(len(values), 1)
        z[:, d] = z0[0, d] + torch.tensor(values, dtype=z.dtype, device=device)
        rows.append(z)
    z = torch.cat(rows)
    e = family.embed(model, _cond_tensor(start.cond, device)).repeat(len(z), 1)
    progress(0.4, f"decoding {len(z)} images")
    images = to_uint8(family.decode(model, z, e))
    sheet = grid(images, len(values))
    progress(0.8, "saving")
    prefix = f"jobs/{job.id}/"
    ctx.storage.put(prefix + "traversal.png", png_bytes(sheet), "image/png")
    output = {"model": meta.ref, "start": start.public(), "dims": dims,
              "values": [round(float(v), 4) for v in values], "grid": {"key": prefix + "traversal.png"},
              "layout": "one row per dimension, one column per value"}
    write_manifest(ctx.storage, job, output, seeds={"base": seed}, model=meta.ref)
    return output

"""What every part of the service knows about each model family, in one torch-free table: the API's
submit checks, the promotion gate, the augment job and the console all read it. Adding a family is
its model file, its trainer, its entry in `worker/families.py` and one row here."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


@dataclass(frozen=True)
class FamilyFacts:
    name: str
    role: Literal["generator", "classifier", "language"]  # image generator, the judge, product copy
    # Promotion: the metrics compared between versions, in order of preference, each with whether
    # lower is better; the first one both versions have decides.
    primary: tuple[tuple[str, bool], ...]
    title: str = ""  # what the console calls it
    encodes: bool = False  # encodes a real image: item endpoints, style mixing, class-mean sampling
    interpolates: bool = True  # hybrid and traverse: a latent and condition embeddings to move through
    # traverse: a low-dimensional latent whose dimensions mean something one at a time (a diffusion
    # model's latent is its starting noise, one value per pixel: sweeping one says nothing)
    traverses: bool = True
    augment_rank: int | None = None  # preference as the augment job's default generator (lower first)
    sampling: frozenset[str] = frozenset()  # `sampling` fields of generate/augment only this family reads

    @property
    def trains_on(self) -> Literal["images", "text"]:
        return "text" if self.role == "language" else "images"


FACTS: dict[str, FamilyFacts] = {f.name: f for f in (
    FamilyFacts("cvae", "generator", (("fid", True), ("test_loss", True)), "conditional VAE", encodes=True,
                augment_rank=1),
    FamilyFacts("cgan", "generator", (("fid", True),), "conditional GAN", augment_rank=0),
    FamilyFacts("diffusion", "generator", (("fid", True), ("test_loss", True)), "diffusion model",
                traverses=False, augment_rank=2, sampling=frozenset({"steps", "guidance"})),
    FamilyFacts("lm", "language", (("test_perplexity", True),), "description model", interpolates=False),
    FamilyFacts("classifier", "classifier", (("accuracy", False),), "domain classifier", interpolates=False),
)}

Family = StrEnum("Family", {name.upper(): name for name in FACTS})  # type: ignore[misc]
Family.__doc__ = "A model family (shared/families.py)."


def names(role: str | None = None, *, encodes: bool | None = None) -> tuple[str, ...]:
    """Family names with a role (and, optionally, an encoder), in table order."""
    return tuple(f.name for f in FACTS.values()
                 if (role is None or f.role == role) and (encodes is None or f.encodes == encodes))


IMAGE_FAMILIES = names("generator")  # generative image models
IMAGE_DATASET_FAMILIES = tuple(f.name for f in FACTS.values() if f.trains_on == "images")
ENCODER_FAMILIES = names("generator", encodes=True)
# the augment job's default generator, in order of preference
AUGMENT_FAMILIES = tuple(sorted((f.name for f in FACTS.values() if f.augment_rank is not None),
                                key=lambda n: FACTS[n].augment_rank or 0))
# The default family for the catalog: `generate_images` uses its active version when neither `model`
# nor `family` is given, and `augment` prefers it. Chosen from the side-by-side table in
# docs/BENCHMARKS.md: the cgan `cpu` preset is the one that meets the adherence, rare-type and
# diversity targets there (the cvae's pictures are on type but blurred, its seeds alike).
DEFAULT_GENERATOR = AUGMENT_FAMILIES[0]
# The console's choice of image family, the default first.
GENERATORS_DEFAULT_FIRST = (DEFAULT_GENERATOR, *(n for n in IMAGE_FAMILIES if n != DEFAULT_GENERATOR))


# every family-only sampling field (shared/schemas.py `Sampling`): submit refuses one the model's family does not read
FAMILY_SAMPLING_FIELDS = frozenset().union(*(f.sampling for f in FACTS.values()))


def facts(family: str) -> FamilyFacts:
    return FACTS[family]

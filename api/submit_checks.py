"""The checks a submitted job gets before it is queued, one function per job type, registered in
`CHECKS`: those that need Redis or object storage (does the model exist, is it the right family, does
the dataset hold images), so bad input is a 422 naming the field rather than a failed job later.
Each returns the model version the job is pinned to, for job types that use one: the job runs on
the version active at submit time. Family capabilities come from shared/families.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api.auth import caller_is_admin
from api.dataset_access import check_source, claim, known_dataset, model_visible, require_owner
from api.services import services
from shared.conditions import resolve_conditions
from shared.errors import Forbidden, NotFound, ValidationFailed
from shared.families import AUGMENT_FAMILIES, ENCODER_FAMILIES, FAMILY_SAMPLING_FIELDS, IMAGE_FAMILIES, facts
from shared.query_images import decode_base64_image
from shared.registry import feature_index_key
from shared.schemas import (
    BUILTIN_DATASETS,
    TEXT_DATASETS,
    AugmentJobRequest,
    DescribeJobRequest,
    Endpoint,
    GenerateImagesJobRequest,
    HybridJobRequest,
    ImportDatasetJobRequest,
    JobType,
    ModelVersion,
    Sampling,
    SimilarJobRequest,
    TrainJobRequest,
    TraverseJobRequest,
)


def resolve_model(ref: str | None, default_family: str, field: str = "input.model") -> ModelVersion:
    """The registry's answer, except that a version trained on another key's dataset reads as one that
    does not exist."""
    model = services().registry.resolve(ref, default_family=default_family, field=field)
    if not model_visible(model):
        raise NotFound(f"model {ref} does not exist; GET /v1/models lists them", code="model_not_found", field=field)
    return model


def holds_text(name: str, field: str) -> bool:
    """Whether a dataset holds product copy rather than images; 422 when it does not exist (the
    built-in ones import themselves on first use)."""
    if name in BUILTIN_DATASETS:
        return name in TEXT_DATASETS
    known_dataset(name, field)  # another key's dataset reads as one that does not exist
    storage, key = services().storage, f"datasets/{name}/meta.json"
    if not storage.exists(key):
        raise ValidationFailed(f"dataset {name!r} has not been imported; POST /v1/datasets or submit an "
                               "import_dataset job first", code="dataset_not_found", field=field)
    return storage.get_json(key).get("format") == "descriptions"


def check_train(req: TrainJobRequest) -> None:
    """Only an admin key changes which version is active for everyone: an ordinary key's versions
    are published inactive (`promote: never`, pinned here) until an admin activates one, and asking
    for anything else is a 403."""
    name, family = req.input.dataset, req.input.family.value
    if not caller_is_admin():
        if "promote" in req.input.model_fields_set and req.input.promote != "never":
            raise Forbidden(f"only an admin key may activate a version (promote: {req.input.promote}); an "
                            "ordinary key's versions are published inactive, for an admin to activate",
                            code="admin_only", field="input.promote")
        req.input.promote = "never"
    if req.input.base_model and family != "lm":
        raise ValidationFailed(f"base_model is for the lm family; {family} trains from a preset",
                               code="unsupported_for_family", field="input.base_model")
    is_text = holds_text(name, "input.dataset")
    needs = facts(family).trains_on
    if is_text != (needs == "text"):
        holds = "product descriptions" if is_text else "images"
        raise ValidationFailed(f"dataset {name!r} holds {holds}; {family} trains on "
                               f"{'product descriptions' if needs == 'text' else 'images'}",
                               code="wrong_dataset_format", field="input.dataset")


def check_import(req: ImportDatasetJobRequest) -> None:
    prefix = req.input.source_prefix
    check_source(prefix)
    claim(req.input.name)
    if prefix and next(iter(services().storage.list(prefix)), None) is None:
        raise ValidationFailed(f"nothing is stored under {prefix}", code="invalid_source", field="input.source_prefix")


def check_similar(req: SimilarJobRequest) -> str:
    """Visual search needs a classifier and its feature index of the dataset; the photo is checked
    here so a bad one is a 422 naming input.image."""
    inp = req.input
    model = resolve_model(inp.classifier, default_family="classifier", field="input.classifier")
    if facts(model.family).role != "classifier":
        raise ValidationFailed(f"{model.ref} is not a classifier; visual search compares classifier features",
                               code="wrong_model_family", field="input.classifier")
    dataset = inp.dataset or model.dataset
    if inp.dataset:
        known_dataset(inp.dataset, "input.dataset")
    if not services().storage.exists(feature_index_key(dataset, model.ref)):
        hint = ("its train job builds it" if dataset == model.dataset else
                f"{model.ref} was trained on {model.dataset}; an augment run on {dataset} builds one")
        raise ValidationFailed(f"no visual-search index of {dataset} under {model.ref} yet ({hint})",
                               code="index_not_built", field="input.dataset" if inp.dataset else "input.classifier")
    if inp.image is not None:
        decode_base64_image(inp.image, "input.image")
    return model.ref


def check_augment(req: AugmentJobRequest) -> str:
    """An augment run needs an image model and a classifier trained on the dataset."""
    inp = req.input
    holds = holds_text(inp.dataset, "input.dataset")
    # a run files under (dataset, date) and the nightly one publishes under the same plan: the shared
    # datasets' runs are the operator's to configure
    require_owner(inp.dataset, "input.dataset", "run augment")
    if holds:
        raise ValidationFailed(f"dataset {inp.dataset!r} holds product descriptions; augment tops up image classes",
                               code="wrong_dataset_format", field="input.dataset")
    registry = services().registry
    if inp.model:
        model = resolve_model(inp.model, default_family=AUGMENT_FAMILIES[0])
        if model.family not in IMAGE_FAMILIES:
            raise ValidationFailed(f"{model.ref} is not an image model", code="wrong_model_family", field="input.model")
        if model.dataset != inp.dataset:
            raise ValidationFailed(f"{model.ref} was trained on {model.dataset}, not {inp.dataset}",
                                   code="wrong_dataset", field="input.model")
    else:
        model = registry.for_dataset(AUGMENT_FAMILIES, inp.dataset)
        if model is None:
            raise ValidationFailed(f"no image model was trained on {inp.dataset}: train one of "
                                   f"{', '.join(AUGMENT_FAMILIES)} on it first",
                                   code="no_model_for_dataset", field="input.dataset")
    check_sampling(inp.sampling, model)
    if registry.for_dataset(("classifier",), inp.dataset, model.vocabulary) is None:
        raise ValidationFailed(f"no classifier was trained on {inp.dataset}: the gate needs one (train family "
                               "classifier)", code="no_classifier", field="input.dataset")
    kinds = model.vocabulary[(model.roles or {}).get("type") or next(iter(model.vocabulary))]
    unknown = sorted(set(inp.classes or []) - set(kinds))
    if unknown:
        raise ValidationFailed(f"{model.ref} has no class {unknown[0]!r}", code="unknown_class", field="input.classes",
                               details={"unknown": unknown, "known": kinds})
    return model.ref


def check_describe(req: DescribeJobRequest) -> str:
    model = resolve_model(req.input.model, default_family="lm")
    if facts(model.family).role != "language":
        raise ValidationFailed(f"{model.ref} is not a language model; describe needs an lm version",
                               code="wrong_model_family", field="input.model")
    return model.ref


def image_model(inp: Any) -> ModelVersion:
    """The image model a generate/hybrid/traverse job names, or its family's active one."""
    model = resolve_model(inp.model, default_family=inp.family.value)
    if model.family not in IMAGE_FAMILIES:
        raise ValidationFailed(f"{model.ref} is not an image model; use one of {', '.join(IMAGE_FAMILIES)}",
                               code="wrong_model_family", field="input.model")
    return model


def check_sampling(sampling: Sampling, model: ModelVersion) -> None:
    """Sampling fields the model's family cannot honour are a 422 naming the field, not silently ignored."""
    if sampling.mode == "class_mean" and model.family not in ENCODER_FAMILIES:
        raise ValidationFailed(f"class_mean sampling needs a model with an encoder; {model.ref} has none",
                               code="unsupported_for_family", field="input.sampling.mode")
    reads = facts(model.family).sampling
    for name in sorted(FAMILY_SAMPLING_FIELDS - reads):
        if getattr(sampling, name) is not None:
            readers = ", ".join(f for f in IMAGE_FAMILIES if name in facts(f).sampling)
            raise ValidationFailed(f"{model.ref} has no {name} to set; only {readers} models read it",
                                   code="unsupported_for_family", field=f"input.sampling.{name}")


def check_generate(req: GenerateImagesJobRequest) -> str:
    inp = req.input
    model = image_model(inp)
    if inp.conditions is not None:
        resolve_conditions(model.vocabulary, inp.conditions)
    if inp.min_confidence is not None and services().registry.for_dataset(
            ("classifier",), model.dataset, model.vocabulary) is None:
        raise ValidationFailed(f"min_confidence needs a classifier trained on {model.dataset} to judge the images "
                               "(train family classifier on it)", code="no_classifier", field="input.min_confidence")
    check_sampling(inp.sampling, model)
    if inp.descriptions:
        writer = resolve_model(inp.description_model, default_family="lm",
                                             field="input.description_model")
        if facts(writer.family).role != "language":
            raise ValidationFailed(f"{writer.ref} is not a language model", code="wrong_model_family",
                                   field="input.description_model")
        inp.description_model = writer.ref  # pinned: a redelivered job writes with the same version
    return model.ref


def _check_endpoint(model: ModelVersion, endpoint: Endpoint, field: str) -> None:
    if endpoint.conditions is not None:
        resolve_conditions(model.vocabulary, endpoint.conditions, field_prefix=f"{field}.conditions")
    if endpoint.item is not None and model.family not in ENCODER_FAMILIES:
        raise ValidationFailed(f"catalog items need a model with an encoder ({', '.join(ENCODER_FAMILIES)}); "
                               f"{model.ref} has none", code="item_not_supported", field=f"{field}.item")


def _interpolating_model(inp: Any) -> ModelVersion:
    model = image_model(inp)
    if not facts(model.family).interpolates:
        raise ValidationFailed(f"{model.ref} has no latent to interpolate", code="unsupported_for_family",
                               field="input.model")
    return model


def check_hybrid(req: HybridJobRequest) -> str:
    model = _interpolating_model(req.input)
    _check_endpoint(model, req.input.a, "input.a")
    _check_endpoint(model, req.input.b, "input.b")
    return model.ref


def check_traverse(req: TraverseJobRequest) -> str:
    model = _interpolating_model(req.input)
    if not facts(model.family).traverses:
        raise ValidationFailed(f"{model.ref} has no low-dimensional latent whose dimensions can be swept one at a "
                               "time; hybrid interpolates between its classes", code="unsupported_for_family",
                               field="input.model")
    _check_endpoint(model, req.input.start, "input.start")
    return model.ref


CHECKS: dict[JobType, Callable[[Any], str | None]] = {
    JobType.TRAIN: check_train,
    JobType.IMPORT_DATASET: check_import,
    JobType.GENERATE_IMAGES: check_generate,
    JobType.HYBRID: check_hybrid,
    JobType.TRAVERSE: check_traverse,
    JobType.DESCRIBE: check_describe,
    JobType.AUGMENT: check_augment,
    JobType.SIMILAR: check_similar,
}


def check_submit(req: Any) -> str | None:
    """Run the job type's check; returns the pinned model version, if the job type uses one."""
    return CHECKS[JobType(req.type)](req)

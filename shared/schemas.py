"""Request and response schemas (pydantic v2). The OpenAPI document is generated from these.

Input limits are declared here once; the API validates against them and the worker trusts them.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.families import (  # noqa: F401  (re-exported: the schemas and the family table travel together)
    AUGMENT_FAMILIES,
    DEFAULT_GENERATOR,
    ENCODER_FAMILIES,
    IMAGE_DATASET_FAMILIES,
    IMAGE_FAMILIES,
    Family,
)

SEED_MAX = 2**31 - 1
MODEL_REF = re.compile(r"^(?P<family>[a-z]+)@(?P<version>v[0-9]{1,6})$")


class StrictModel(BaseModel):
    """Unknown fields are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})


class JobType(StrEnum):
    TRAIN = "train"
    GENERATE_IMAGES = "generate_images"
    IMPORT_DATASET = "import_dataset"
    HYBRID = "hybrid"
    TRAVERSE = "traverse"
    DESCRIBE = "describe"
    AUGMENT = "augment"
    SIMILAR = "similar"


TEXT_DATASETS = frozenset({"descriptions"})  # built-in datasets of product copy rather than images


class Preset(StrEnum):
    TINY = "tiny"
    CPU = "cpu"
    GPU = "gpu"



def _json_numeric(value: object) -> object:
    """JSON numbers only: true/false and numeric strings are refused instead of coerced. Integral
    floats such as 3.0 pass, as JSON has one number type; `int` then refuses 3.5."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON number")
    return value


def integer(**limits: int) -> object:
    """A JSON integer with limits: true/false or "3" are errors, not coerced."""
    return Annotated[int, Field(**limits), BeforeValidator(_json_numeric)]


def number(**limits: float) -> object:
    """A JSON number with limits: JSON true/false or "0.1" are errors, not coerced."""
    return Annotated[float, Field(**limits), BeforeValidator(_json_numeric)]


# Numbers are strict about JSON types: true/false or "3" are errors, not silently 1/0/3.
Seed = Annotated[integer(ge=0, le=SEED_MAX), Field(description="random seed; same seed + model version = same output")]
ConditionValue = Annotated[str, StringConstraints(min_length=1, max_length=100)] | integer(ge=0, le=9999)
Conditions = Annotated[dict[str, ConditionValue], Field(min_length=1, max_length=8)]
DATASET_NAME = r"^[a-z0-9][a-z0-9-]{0,39}$"
DatasetName = Annotated[str, Field(pattern=DATASET_NAME, description="dataset name, e.g. catalog or fashion-mnist")]
# imported from ATELIER_DATASETS on first use
BUILTIN_DATASETS = frozenset({"fashion-mnist", "catalog", "descriptions"})
ModelRef = Annotated[str, Field(max_length=40, pattern=MODEL_REF.pattern,
                                description='model version as "family@version", e.g. "cvae@v2"')]
ColumnName = Annotated[str, StringConstraints(min_length=1, max_length=100)]


def _calendar_date(value: str) -> str:
    date.fromisoformat(value)  # 2026-02-30 matches the pattern but is no date
    return value


DateStr = Annotated[str, StringConstraints(pattern=r"^20[0-9]{2}-[0-9]{2}-[0-9]{2}$"), AfterValidator(_calendar_date),
                    Field(description="a calendar date, YYYY-MM-DD")]
ItemId = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")]


# --- job inputs -------------------------------------------------------------------------------


class TrainInput(StrictModel):
    family: Family = Field(description="model family to train")
    dataset: DatasetName = Field(description="an imported dataset; fashion-mnist and catalog import on first use")
    preset: Preset = Field(Preset.CPU, description="size preset: tiny (seconds, tests), cpu, gpu")
    epochs: integer(ge=1, le=500) | None = Field(None, description="overrides the preset")
    batch_size: integer(ge=1, le=4096) | None = None
    learning_rate: number(gt=0, le=1) | None = None
    max_train_examples: integer(ge=1, le=10_000_000) | None = Field(None, description="cap on training examples")
    max_minutes: number(gt=0, le=10_080) | None = Field(
        None, description="time budget (classifier): training stops at the end of the step that crosses it, then "
                          "evaluates and publishes; the learning-rate schedule follows whichever ends first")
    seed: Seed | None = None
    base_model: Annotated[str, StringConstraints(max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] | None = (
        Field(None, description="lm: fine-tune this pretrained GPT-2, a directory under ATELIER_BASE_MODELS, "
                                "instead of training from the preset"))
    promote: Literal["auto", "always", "never"] = Field(
        "auto", description="auto: the new version becomes active if it is the family's first, or beats the "
                            "active version on the family's primary metric (FID for image models judged by a "
                            "classifier, held-out accuracy, held-out perplexity); always; never")


class Sampling(StrictModel):
    mode: Literal["auto", "prior", "class_mean"] = Field(
        "auto", description="prior: z ~ N(0, I); class_mean (cvae): the class's mean latent plus noise of scale "
                            "`spread`; auto: class_mean where the model has class means, else prior")
    spread: number(ge=0.0, le=3.0) = Field(0.5, description="class_mean: scale of the noise around the mean")
    # Family-only fields (shared/families.py `sampling`): absent means the model's own default; given
    # for a family that does not read them, a 422 naming the field.
    steps: integer(ge=1, le=200) | None = Field(
        None, description="diffusion: noise levels of the sampler (2·steps − 1 network passes); default: the "
                          "model's")
    guidance: number(ge=0.0, le=10.0) | None = Field(
        None, description="diffusion: classifier-free guidance scale; 1 is the conditional model alone, higher "
                          "follows the request more closely with less variety; default: the model's")

    def family_options(self, family_fields: frozenset[str]) -> dict[str, Any]:
        """The family-only fields given, for a family that reads `family_fields`."""
        return {name: getattr(self, name) for name in sorted(family_fields) if getattr(self, name) is not None}


def exactly_one_of(*names: str) -> ConfigDict:
    """Strict model whose JSON schema says exactly one of `names` is present (they are not nullable),
    so generated clients and fuzzers know the rule the validators enforce."""
    return ConfigDict(extra="forbid", json_schema_extra={"oneOf": [{"required": [n]} for n in names]})


Prompt = Annotated[str, StringConstraints(min_length=1, max_length=500)]


def require_exactly_one(model: BaseModel, *names: str) -> Any:
    """The rule behind `exactly_one_of`, reported on the first field's path (input.conditions)."""
    given = [n for n in names if getattr(model, n) is not None]
    if len(given) != 1:
        listed = ", ".join(f"`{n}`" for n in names)
        raise ValidationError.from_exception_data(type(model).__name__, [InitErrorDetails(
            type=PydanticCustomError("exactly_one", f"give exactly one of {listed}" +
                                     (f" (got {', '.join(given)})" if given else "")),
            loc=(names[0],), input=None)])
    return model


class GenerateImagesInput(StrictModel):
    model_config = exactly_one_of("prompt", "conditions")

    # Not nullable: absent means "not given"; an explicit null is an error.
    prompt: Prompt = Field(None, description='free text instead of conditions, e.g. "black short sleeve jumpsuit"')
    # Names are checked against the model's vocabulary at submit (a 422 naming the condition).
    conditions: Conditions = Field(
        None,
        description='condition name to value, e.g. {"articleType": "Jumpsuit", "baseColour": "Black"}')
    allow_approximate: bool = Field(False, description="generate the closest class when the prompt matches none well")
    dry_run: bool = Field(False, description="only interpret the prompt (or check the conditions); generate nothing")
    n: integer(ge=1, le=64) = Field(8, description="number of images")
    seed: Seed | None = None
    model: ModelRef | None = Field(None, description="default: the active model of `family`")
    family: Family = Field(Family(DEFAULT_GENERATOR), description="family whose active model is used when `model` "
                                                                  "is not given (default: the catalog's default "
                                                                  "family)")
    temperature: number(ge=0.0, le=3.0) = Field(1.0, description="scale of the latent noise")
    sampling: Sampling = Field(default_factory=Sampling)
    min_confidence: number(ge=0.0, le=1.0) | None = Field(
        None, description="τ: keep only images the dataset's classifier gives at least this confidence for the "
                          "requested product type; extra candidates are drawn (up to n × max_attempts) and the n "
                          "most confident returned. A shortfall is stated, never filled with rejects")
    max_attempts: integer(ge=1, le=16) = Field(4, description="with min_confidence: candidates drawn per image "
                                                              "asked for, at most")
    descriptions: integer(ge=0, le=64) = Field(
        0, description="give the first k images each its own description, written by the language model from "
                       "the interpreted prompt and its unmapped words")
    description_model: ModelRef | None = Field(None, description="lm version for `descriptions`; default: the "
                                                                 "active lm when the job is submitted")

    @model_validator(mode="after")
    def _one_source(self) -> GenerateImagesInput:
        if self.descriptions > self.n:
            raise ValidationError.from_exception_data(type(self).__name__, [InitErrorDetails(
                type=PydanticCustomError("too_many", f"at most n ({self.n}) descriptions, one per image"),
                loc=("descriptions",), input=self.descriptions)])
        return require_exactly_one(self, "conditions", "prompt")


class AttributesInput(StrictModel):
    """A product described by its parts instead of free text."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=60)] | None = Field(
        None, description='product type, e.g. "Jumpsuit" or "jumpsuit"')
    colour: Annotated[str, StringConstraints(min_length=1, max_length=40)] | None = Field(
        None, description='e.g. "Black" or "navy"')
    details: list[Annotated[str, StringConstraints(min_length=1, max_length=60)]] = Field(
        default_factory=list, max_length=10, description='e.g. ["short sleeves", "v-neck"]')
    brand: Annotated[str, StringConstraints(min_length=1, max_length=60)] | None = None
    gender: Literal["Men", "Women", "Boys", "Girls", "Unisex"] | None = None

    @model_validator(mode="after")
    def _something(self) -> AttributesInput:
        if self.type is None and self.colour is None and not self.details:
            raise ValueError("give at least one of type, colour or details")
        return self


class SamplingText(StrictModel):
    max_tokens: integer(ge=8, le=200) = Field(80, description="longest description, in tokens")
    temperature: number(ge=0.0, le=2.0) = Field(0.8, description="0: greedy (the same text for every seed)")
    top_p: number(gt=0.0, le=1.0) = 0.95
    top_k: integer(ge=0, le=1000) = Field(50, description="0: no top-k cut")
    repetition_penalty: number(ge=1.0, le=2.0) = Field(1.1, description="on tokens already generated")


class DescribeInput(SamplingText):
    model_config = exactly_one_of("prompt", "attributes")

    prompt: Prompt = Field(None, description='free text, e.g. "black short sleeve jumpsuit"')
    attributes: AttributesInput = None
    n: integer(ge=1, le=16) = Field(4, description="descriptions to generate; they come back ranked")
    opening: Literal["attributes", "free"] = Field(
        "attributes", description='attributes: the copy opens with the requested colour, pattern and type '
                                  '("Navy Blue printed T-shirt") and the model writes the rest; free: the model '
                                  'writes all of it')
    seed: Seed | None = None
    model: ModelRef | None = Field(None, description="default: the active lm")

    @model_validator(mode="after")
    def _one_source(self) -> DescribeInput:
        return require_exactly_one(self, "prompt", "attributes")


class AugmentInput(StrictModel):
    """Top up a dataset's rare classes with gated synthetic images (the nightly job; also by hand)."""

    dataset: DatasetName
    date: DateStr | None = Field(None, description="YYYY-MM-DD the run files under; default: today in the "
                                                   "schedule's timezone. One run per dataset and date: a "
                                                   "rerun resumes or returns the finished run")
    model: ModelRef | None = Field(None, description="image model; default: the active (else newest) cgan or "
                                                     "cvae trained on the dataset")
    classes: list[ColumnName] | None = Field(None, min_length=1, max_length=1000,
                                             description="only consider these classes")
    max_per_class: integer(ge=1, le=10_000) | None = Field(None, description="default: the setting")
    min_confidence: number(ge=0.0, le=1.0) | None = Field(None, description="τ; default: the setting")
    min_class_adherence: number(ge=0.0, le=1.0) | None = Field(
        None, description="classes the model's evaluation says it draws less faithfully than this are not "
                          "published; default: the setting")
    descriptions: bool = Field(True, description="describe each kept image when a language model is active")
    sampling: Sampling = Field(default_factory=Sampling, description="how candidates are drawn, as for "
                                                                     "generate_images (steps and guidance for "
                                                                     "diffusion models)")


class SimilarInput(StrictModel):
    """Visual search: the catalog items that look most like a catalog item or a photo."""

    model_config = exactly_one_of("item", "image")

    item: ItemId = Field(None, description="a catalog item id of `dataset`")
    image: Annotated[str, StringConstraints(min_length=8, max_length=6_000_000)] = Field(
        None, description="a JPEG or PNG, base64 (a data: URL is fine), within the request body limit")
    dataset: DatasetName | None = Field(None, description="default: the dataset the classifier was trained on")
    k: integer(ge=1, le=50) = Field(5, description="neighbours to return")
    classifier: ModelRef | None = Field(None, description="whose features compare the photos; default: the active "
                                                          "classifier when the job is submitted")

    @model_validator(mode="after")
    def _one_source(self) -> SimilarInput:
        return require_exactly_one(self, "item", "image")


class Endpoint(StrictModel):
    """One end of a hybrid: a class (conditions or a prompt) or a catalog item by id."""

    model_config = exactly_one_of("conditions", "prompt", "item")

    conditions: Conditions = None
    prompt: Prompt = None
    item: ItemId = Field(None, description="a catalog item id from the model's training dataset (cvae)")

    @model_validator(mode="after")
    def _one_source(self) -> Endpoint:
        return require_exactly_one(self, "conditions", "prompt", "item")


class HybridInput(StrictModel):
    a: Endpoint
    b: Endpoint
    mode: Literal["interpolate", "style_mix"] = Field(
        "interpolate", description="interpolate: frames from a to b; style_mix (cvae, items): each item's "
                                   "latent decoded with the other's type and colour")
    steps: integer(ge=2, le=32) = Field(8, description="interpolation frames, ends included")
    seed: Seed | None = None
    model: ModelRef | None = None
    family: Family = Family.CVAE
    allow_approximate: bool = False


class TraverseInput(StrictModel):
    start: Endpoint = Field(description="the class or item whose latent is swept")
    dims: list[integer(ge=0, le=1023)] | None = Field(
        None, max_length=16, description="latent dimensions to sweep; default: the 8 most active")
    span: number(gt=0.0, le=10.0) = Field(3.0, description="sweep from -span to +span around the start")
    steps: integer(ge=3, le=21) = 9
    seed: Seed | None = None
    model: ModelRef | None = None
    family: Family = Family.CVAE
    allow_approximate: bool = False


class CatalogColumnsInput(StrictModel):
    id: ColumnName = "id"
    type: ColumnName = Field("articleType", description="the product type column (a condition)")
    colour: ColumnName = Field("baseColour", description="the colour column (a condition)")
    title: ColumnName = "productDisplayName"
    group: ColumnName | None = Field(None, description="column filtered by `groups`")


class TextColumnsInput(StrictModel):
    id: ColumnName = "ProductID"
    name: ColumnName = Field("ProductName", description="the product name: what a description is written for")
    description: ColumnName = "Description"
    colour: ColumnName | None = Field("PrimaryColor", description="only compared with the colour in the name")


class ImportDatasetInput(StrictModel):
    name: DatasetName
    format: Literal["catalog", "fashion-mnist", "descriptions"] = Field(
        "catalog", description="catalog: product photos; descriptions: product names with their copy")
    source_prefix: Annotated[str, StringConstraints(max_length=300, pattern=r"^uploads/[A-Za-z0-9/_.-]+/$")] | None = (
        Field(None, description="object-storage prefix with one CSV and a zip (or images); "
                                "default: the demo data under ATELIER_DATASETS"))
    columns: CatalogColumnsInput | None = Field(None, description="default: the demo catalog's column names")
    text_columns: TextColumnsInput | None = Field(None, description="descriptions: default the Myntra demo's")
    groups: list[ColumnName] | None = Field(
        None, max_length=50, description="keep rows whose group column is one of these; the demo catalog "
                                         "defaults to Apparel, Footwear and Accessories")
    classes: list[ColumnName] | None = Field(None, max_length=1000, description="only these product types")
    max_per_class: integer(ge=1, le=1_000_000) | None = None
    min_class_count: integer(ge=1, le=10_000) = Field(8, description="classes below this are listed, not trained")
    test_fraction: number(ge=0.01, le=0.5) = 0.1
    seed: Seed | None = None


WebhookUrl = Annotated[str, Field(max_length=2000, pattern=r"^https?://[^\s]+$",
                                   description="called (POST, signed) when the job reaches one of the events")]
WebhookEvent = Literal["running", "succeeded", "failed", "canceled"]


class WebhookSpec(StrictModel):
    url: WebhookUrl
    events: list[WebhookEvent] = Field(["succeeded", "failed", "canceled"], min_length=1, max_length=4,
                                       description="which status changes are delivered")


Webhook = Annotated[WebhookUrl | WebhookSpec, Field(description="a URL (the job's end) or {url, events}")]


class TrainJobRequest(StrictModel):
    type: Literal["train"]
    input: TrainInput
    webhook: Webhook | None = None


class GenerateImagesJobRequest(StrictModel):
    type: Literal["generate_images"]
    input: GenerateImagesInput
    webhook: Webhook | None = None


class ImportDatasetJobRequest(StrictModel):
    type: Literal["import_dataset"]
    input: ImportDatasetInput
    webhook: Webhook | None = None


class HybridJobRequest(StrictModel):
    type: Literal["hybrid"]
    input: HybridInput
    webhook: Webhook | None = None


class TraverseJobRequest(StrictModel):
    type: Literal["traverse"]
    input: TraverseInput
    webhook: Webhook | None = None


class DescribeJobRequest(StrictModel):
    type: Literal["describe"]
    input: DescribeInput
    webhook: Webhook | None = None


class AugmentJobRequest(StrictModel):
    type: Literal["augment"]
    input: AugmentInput
    webhook: Webhook | None = None


class SimilarJobRequest(StrictModel):
    type: Literal["similar"]
    input: SimilarInput
    webhook: Webhook | None = None


class JobRequest(RootModel):
    """POST /v1/jobs body: the job type selects the input schema."""

    root: Annotated[TrainJobRequest | GenerateImagesJobRequest | ImportDatasetJobRequest | HybridJobRequest
                    | TraverseJobRequest | DescribeJobRequest | AugmentJobRequest | SimilarJobRequest,
                    Field(discriminator="type")]


INPUT_SCHEMAS: dict[JobType, type[StrictModel]] = {
    JobType.TRAIN: TrainInput,
    JobType.GENERATE_IMAGES: GenerateImagesInput,
    JobType.IMPORT_DATASET: ImportDatasetInput,
    JobType.HYBRID: HybridInput,
    JobType.TRAVERSE: TraverseInput,
    JobType.DESCRIBE: DescribeInput,
    JobType.AUGMENT: AugmentInput,
    JobType.SIMILAR: SimilarInput,
}


# --- responses --------------------------------------------------------------------------------


class Progress(BaseModel):
    fraction: float = Field(ge=0, le=1)
    message: str = ""


class ErrorInfo(BaseModel):
    code: str
    message: str
    field: str | None = None
    details: dict[str, Any] | None = None


class WebhookDelivery(BaseModel):
    event: str
    attempt: int
    at: datetime
    ok: bool
    status_code: int | None = None
    error: str | None = None
    duration_ms: int | None = None
    next_attempt_in_s: float | None = Field(None, description="when it is tried again; absent on the last")


class Job(BaseModel):
    id: str
    type: JobType
    status: JobStatus
    input: dict[str, Any]
    progress: Progress
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    output: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    model: str | None = Field(None, description="family@version used or produced")
    owner: str
    attempts: int = 0
    cancel_requested: bool = False
    webhook: str | None = None
    webhook_events: list[str] | None = None
    webhook_deliveries: list[WebhookDelivery] = Field(default_factory=list,
                                                      description="every delivery attempt, oldest first")


class JobList(BaseModel):
    jobs: list[Job]
    next_cursor: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


class ModelVersion(BaseModel):
    family: str
    version: str
    ref: str
    dataset: str
    created_at: datetime
    job_id: str
    metrics: dict[str, Any]
    vocabulary: dict[str, list[str]]
    counts: dict[str, dict[str, int]] | None = Field(None, description="training images per condition value")
    roles: dict[str, str] | None = Field(None, description='which condition is the product "type" and "colour"')
    joint_counts: dict[str, dict[str, int]] | None = Field(None, description="training images per type and colour")
    active: bool = False


class ModelList(BaseModel):
    models: list[ModelVersion]


class DatasetSummary(BaseModel):
    name: str
    format: str | None = None
    imported_at: datetime | None = None
    sizes: dict[str, int] = Field(default_factory=dict, description="images in the train and test splits")
    classes: dict[str, int] = Field(default_factory=dict, description="number of values per condition")
    roles: dict[str, str] | None = None
    image_size: int | None = None
    channels: int | None = None
    rows: int | None = Field(None, description="rows read from the source CSV")
    skipped: dict[str, int] | None = Field(None, description="rows left out, by reason")
    below_minimum: dict[str, Any] | None = Field(None, description="classes with too few images to train on")
    source: str | None = None


class DatasetDetail(DatasetSummary):
    vocabulary: dict[str, list[str]] = Field(default_factory=dict)
    counts: dict[str, dict[str, int]] | None = Field(None, description="training images per condition value")
    skipped_examples: dict[str, list[str]] | None = Field(None, description="up to 10 item ids per reason")


class DatasetList(BaseModel):
    datasets: list[DatasetSummary]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str]


class ListJobsQuery(StrictModel):
    status: JobStatus | None = None
    type: JobType | None = None
    limit: int = Field(20, ge=1, le=200)
    cursor: str | None = Field(None, max_length=64, pattern=r"^[0-9a-f]{1,64}$")
    owner: str | None = Field(None, max_length=64, description="admin keys only: one owner's jobs")


class JobPath(StrictModel):
    job_id: str = Field(max_length=64)


class ModelPath(StrictModel):
    family: str = Field(max_length=40)
    version: str = Field(max_length=40)

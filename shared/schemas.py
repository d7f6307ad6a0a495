"""Request and response schemas (pydantic v2). The OpenAPI document is generated from these.

Input limits are declared here once; the API validates against them and the worker trusts them.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel, StringConstraints

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


class Family(StrEnum):
    CVAE = "cvae"


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


# --- job inputs -------------------------------------------------------------------------------


class TrainInput(StrictModel):
    family: Family = Field(description="model family to train")
    dataset: Literal["fashion-mnist"] = Field(description="dataset name; imported on first use")
    preset: Preset = Field(Preset.CPU, description="size preset: tiny (seconds, tests), cpu, gpu")
    epochs: integer(ge=1, le=500) | None = Field(None, description="overrides the preset")
    batch_size: integer(ge=1, le=4096) | None = None
    learning_rate: number(gt=0, le=1) | None = None
    max_train_examples: integer(ge=1, le=10_000_000) | None = Field(None, description="cap on training examples")
    seed: Seed | None = None
    activate: Literal["auto", "always", "never"] = Field(
        "auto", description="auto: the first version of a family becomes active"
    )


class GenerateImagesInput(StrictModel):
    # Names are checked against the model's vocabulary at submit (a 422 naming the condition).
    conditions: dict[str, ConditionValue] = Field(
        description='condition name to value, e.g. {"class": "Dress"} or {"class": 3}',
        min_length=1, max_length=8,
    )
    n: integer(ge=1, le=64) = Field(8, description="number of images")
    seed: Seed | None = None
    model: str | None = Field(
        None, description='model version as "family@version", e.g. "cvae@v2"; default: the active cvae',
        max_length=40, pattern=MODEL_REF.pattern,
    )
    temperature: number(ge=0.0, le=3.0) = Field(1.0, description="scale of the latent noise")


Webhook = Annotated[str, Field(max_length=2000, pattern=r"^https?://", description="called when the job ends")]


class TrainJobRequest(StrictModel):
    type: Literal["train"]
    input: TrainInput
    webhook: Webhook | None = None


class GenerateImagesJobRequest(StrictModel):
    type: Literal["generate_images"]
    input: GenerateImagesInput
    webhook: Webhook | None = None


class JobRequest(RootModel):
    """POST /v1/jobs body: the job type selects the input schema."""

    root: Annotated[TrainJobRequest | GenerateImagesJobRequest, Field(discriminator="type")]


INPUT_SCHEMAS: dict[JobType, type[StrictModel]] = {
    JobType.TRAIN: TrainInput,
    JobType.GENERATE_IMAGES: GenerateImagesInput,
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
    active: bool = False


class ModelList(BaseModel):
    models: list[ModelVersion]


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


class JobPath(StrictModel):
    job_id: str = Field(max_length=64)


class ModelPath(StrictModel):
    family: str = Field(max_length=40)
    version: str = Field(max_length=40)

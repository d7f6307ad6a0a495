"""Request and response schemas (pydantic v2). The OpenAPI document is generated from these.

Input limits are declared here once; the API validates against them and the worker trusts them.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator

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


Seed = Annotated[int, Field(ge=0, le=SEED_MAX, description="random seed; same seed + model version = same output")]


# --- job inputs -------------------------------------------------------------------------------


class TrainInput(StrictModel):
    family: Family = Field(description="model family to train")
    dataset: Literal["fashion-mnist"] = Field(description="dataset name; imported on first use")
    preset: Preset = Field(Preset.CPU, description="size preset: tiny (seconds, tests), cpu, gpu")
    epochs: int | None = Field(None, ge=1, le=500, description="overrides the preset")
    batch_size: int | None = Field(None, ge=1, le=4096)
    learning_rate: float | None = Field(None, gt=0, le=1)
    max_train_examples: int | None = Field(None, ge=1, le=10_000_000, description="cap on training examples")
    seed: Seed | None = None
    activate: Literal["auto", "always", "never"] = Field(
        "auto", description="auto: the first version of a family becomes active"
    )


class GenerateImagesInput(StrictModel):
    conditions: dict[str, str | int] = Field(
        description='condition name to value, e.g. {"class": "Dress"} or {"class": 3}',
        min_length=1, max_length=8,
    )
    n: int = Field(8, ge=1, le=64, description="number of images")
    seed: Seed | None = None
    model: str | None = Field(
        None, description='model version as "family@version", e.g. "cvae@v2"; default: the active cvae',
        max_length=40,
    )
    temperature: float = Field(1.0, ge=0.0, le=3.0, description="scale of the latent noise")

    @field_validator("model")
    @classmethod
    def _model_ref(cls, value: str | None) -> str | None:
        if value is not None and not MODEL_REF.match(value):
            raise ValueError('must look like "cvae@v1"')
        return value

    @field_validator("conditions")
    @classmethod
    def _condition_values(cls, value: dict[str, str | int]) -> dict[str, str | int]:
        for key, item in value.items():
            if not key or len(key) > 40:
                raise ValueError("condition names are 1..40 characters")
            if isinstance(item, str) and not 1 <= len(item) <= 100:
                raise ValueError(f"condition {key!r} must be 1..100 characters")
            if isinstance(item, int) and not 0 <= item < 10_000:
                raise ValueError(f"condition {key!r} index must be 0..9999")
        return value


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

"""One typed settings object, read from the environment once by each process's entry point.

Nothing in the project reads the environment at import time: `Settings.from_env()` is called by
`api.create_app`, `worker.main` and the local runner, and the object is passed on from there.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Every setting, its environment variable and default. The README's table mirrors this."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    # --- connections -------------------------------------------------------------------------
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=_env("REDIS_URL"))
    s3_endpoint_url: str | None = Field(None, validation_alias=_env("S3_ENDPOINT_URL"))
    s3_public_endpoint_url: str | None = Field(
        None, validation_alias=_env("S3_PUBLIC_ENDPOINT_URL"),
        description="endpoint written into presigned URLs when clients reach S3 by another name",
    )
    s3_bucket: str = Field("atelier", validation_alias=_env("S3_BUCKET"))
    s3_region: str = Field("us-east-1", validation_alias=_env("S3_REGION", "AWS_REGION"))
    s3_access_key_id: str | None = Field(None, validation_alias=_env("S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"))
    s3_secret_access_key: str | None = Field(
        None, validation_alias=_env("S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")
    )
    s3_create_bucket: bool = Field(True, validation_alias=_env("S3_CREATE_BUCKET"))
    s3_retry_deadline_s: float = Field(
        300.0, ge=0, validation_alias=_env("ATELIER_S3_RETRY_DEADLINE_SECONDS"),
        description="how long a worker's storage call rides out an unavailable store before the job fails")
    presign_expiry_s: int = Field(3600, ge=60, le=7 * 86400, validation_alias=_env("PRESIGN_EXPIRY_SECONDS"))
    url_signing_secret: str | None = Field(
        None, min_length=16, validation_alias=_env("ATELIER_URL_SIGNING_SECRET"),
        description="HMAC key of generated images' URLs (served by the API from the job's images archive); "
                    "unset: derived from S3_SECRET_ACCESS_KEY")
    public_url: str | None = Field(None, validation_alias=_env("ATELIER_PUBLIC_URL"),
                                   description="the API's address as clients reach it, for image URLs in webhook "
                                               "payloads; unset: API answers use the request's own host, "
                                               "webhooks http://127.0.0.1:PORT")

    # --- API ----------------------------------------------------------------------------------
    port: int = Field(8000, validation_alias=_env("PORT"))
    max_body_bytes: int = Field(1 << 20, validation_alias=_env("ATELIER_MAX_BODY_BYTES"))
    max_upload_bytes: int = Field(1 << 30, validation_alias=_env("ATELIER_MAX_UPLOAD_BYTES"),
                                  description="largest POST /v1/datasets upload (CSV + zip)")
    max_wait_s: int = Field(60, ge=0, le=60, validation_alias=_env("ATELIER_MAX_WAIT_SECONDS"))
    max_waits_per_key: int = Field(4, ge=0, validation_alias=_env("ATELIER_MAX_WAITS_PER_KEY"),
                                   description="`Prefer: wait` requests one key may hold open at once in each API "
                                               "process; beyond it the answer comes at once (0: no limit)")
    idempotency_ttl_s: int = Field(86400, validation_alias=_env("ATELIER_IDEMPOTENCY_TTL_SECONDS"))
    job_ttl_s: int = Field(30 * 86400, validation_alias=_env("ATELIER_JOB_TTL_SECONDS"),
                           description="how long finished job records are kept in Redis")

    # --- keys, limits and webhooks -------------------------------------------------------------
    api_keys: str = Field("", validation_alias=_env("ATELIER_API_KEYS"),
                          description='JSON list of {"name", "sha256", "admin"?, "max_queued"?}; empty: no keys, '
                                      "every caller is the public owner (development)")
    api_keys_file: Path | None = Field(None, validation_alias=_env("ATELIER_API_KEYS_FILE"),
                                       description="the same JSON in a file (a mounted Secret); wins over the variable")
    max_queued_jobs: int = Field(1000, ge=0, validation_alias=_env("ATELIER_MAX_QUEUED_JOBS"),
                                 description="queued jobs per key before submits get 429 (0: no limit)")
    queue_limit_retry_after_s: int = Field(30, ge=1, validation_alias=_env("ATELIER_QUEUE_LIMIT_RETRY_AFTER_SECONDS"))
    console_session_s: int = Field(12 * 3600, ge=60, validation_alias=_env("ATELIER_CONSOLE_SESSION_SECONDS"),
                                   description="how long a console sign-in lasts (server-side, ended by sign-out)")
    trusted_proxies: int = Field(0, ge=0, le=5, validation_alias=_env("ATELIER_TRUSTED_PROXIES"),
                                 description="reverse proxies in front of the API whose X-Forwarded-For/-Proto/"
                                             "-Host are believed (werkzeug ProxyFix); 0: none")
    webhook_secret: str | None = Field(None, min_length=16, validation_alias=_env("ATELIER_WEBHOOK_SECRET"),
                                       description="HMAC-SHA256 key for webhook signatures; webhooks are refused "
                                                   "without one")
    webhook_allow_private: bool = Field(False, validation_alias=_env("ATELIER_WEBHOOK_ALLOW_PRIVATE"),
                                        description="allow webhook targets on loopback and private ranges")
    webhook_max_attempts: int = Field(6, ge=1, le=20, validation_alias=_env("ATELIER_WEBHOOK_MAX_ATTEMPTS"))
    webhook_backoff_s: float = Field(2.0, gt=0, validation_alias=_env("ATELIER_WEBHOOK_BACKOFF_SECONDS"),
                                     description="first retry delay; doubles each attempt (with jitter)")
    webhook_timeout_s: float = Field(10.0, gt=0, le=60, validation_alias=_env("ATELIER_WEBHOOK_TIMEOUT_SECONDS"))

    # --- jobs and workers ---------------------------------------------------------------------
    job_max_attempts: int = Field(3, ge=1, le=20, validation_alias=_env("ATELIER_JOB_MAX_ATTEMPTS"))
    job_lease_s: float = Field(20.0, gt=1, validation_alias=_env("ATELIER_JOB_LEASE_SECONDS"))
    heartbeat_s: float = Field(2.0, gt=0, validation_alias=_env("ATELIER_HEARTBEAT_SECONDS"))
    batch_max_images: int = Field(
        256, ge=0, le=4096, validation_alias=_env("ATELIER_BATCH_MAX_IMAGES"),
        description="images one forward pass may serve across queued generate_images jobs for the same model "
                    "version; 0: no batching across jobs")
    batch_max_descriptions: int = Field(
        64, ge=0, le=1024, validation_alias=_env("ATELIER_BATCH_MAX_DESCRIPTIONS"),
        description="descriptions one generation pass may write across queued describe jobs for the same "
                    "language model version; 0: no batching across jobs")
    batch_max_queries: int = Field(
        64, ge=0, le=1024, validation_alias=_env("ATELIER_BATCH_MAX_QUERIES"),
        description="query photos one classifier pass may read across queued similar jobs for the same "
                    "classifier version; 0: no batching across jobs")
    batch_window_ms: float = Field(
        0.0, ge=0, le=1000, validation_alias=_env("ATELIER_BATCH_WINDOW_MS"),
        description="how long a worker about to sample waits for more jobs to batch with (the queue is "
                    "always looked at once)")
    reaper_interval_s: float = Field(15.0, gt=0, validation_alias=_env("ATELIER_REAPER_INTERVAL_SECONDS"))
    lost_message_after_s: float = Field(
        60.0, gt=0, validation_alias=_env("ATELIER_LOST_MESSAGE_AFTER_SECONDS"),
        description="a job queued this long whose message is in no queue gets a new one (checked once a period)")
    train_time_limit_s: int = Field(6 * 3600, validation_alias=_env("ATELIER_TRAIN_TIME_LIMIT_SECONDS"))
    interactive_time_limit_s: int = Field(600, validation_alias=_env("ATELIER_INTERACTIVE_TIME_LIMIT_SECONDS"))
    batch_time_limit_s: int = Field(3 * 3600, validation_alias=_env("ATELIER_BATCH_TIME_LIMIT_SECONDS"))
    device: Literal["auto", "cpu", "cuda"] = Field("auto", validation_alias=_env("ATELIER_DEVICE"))
    mixed_precision: Literal["auto", "bf16", "off"] = Field(
        "auto", validation_alias=_env("ATELIER_MIXED_PRECISION"),
        description="bf16 autocast in training: auto uses it where the CPU or GPU computes bf16 natively")
    model_cache_size: int = Field(4, ge=1, validation_alias=_env("ATELIER_MODEL_CACHE_SIZE"))
    preload_interpreter: bool = Field(True, validation_alias=_env("ATELIER_PRELOAD_INTERPRETER"),
                                      description="load the prompt interpreter when a worker process starts")
    upload_concurrency: int = Field(16, ge=1, le=128, validation_alias=_env("ATELIER_UPLOAD_CONCURRENCY"))

    # --- data ---------------------------------------------------------------------------------
    datasets_dir: Path | None = Field(None, validation_alias=_env("ATELIER_DATASETS"))
    base_models_dir: Path | None = Field(None, validation_alias=_env("ATELIER_BASE_MODELS"),
                                         description="pretrained GPT-2 directories a `train` job may fine-tune")
    allow_dataset_download: bool = Field(True, validation_alias=_env("ATELIER_ALLOW_DATASET_DOWNLOAD"))
    var_dir: Path = Field(Path("var"), validation_alias=_env("ATELIER_VAR"))
    wordnet_dir: Path = Field(Path("/usr/share/wordnet"), validation_alias=_env("ATELIER_WORDNET_DIR"),
                              description="WordNet 3.0 database (Debian's wordnet-base) the prompt interpreter "
                                          "reads unlisted product words with; missing: similarity alone")

    # --- nightly rare-class augmentation -------------------------------------------------------
    augment_datasets: str = Field("", validation_alias=_env("ATELIER_AUGMENT_DATASETS"),
                                  description="comma-separated datasets the nightly schedule augments")
    augment_time: str = Field("02:30", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
                              validation_alias=_env("ATELIER_AUGMENT_TIME"), description="HH:MM, local to the timezone")
    augment_timezone: str = Field("UTC", validation_alias=_env("ATELIER_AUGMENT_TIMEZONE"),
                                  description="IANA name, e.g. Europe/Paris; also the date an augment run files under")
    augment_min_count: int = Field(50, ge=0, validation_alias=_env("ATELIER_AUGMENT_MIN_COUNT"),
                                   description="a class with fewer training images is rare (0: off)")
    augment_median_share: float = Field(0.1, ge=0, le=1, validation_alias=_env("ATELIER_AUGMENT_MEDIAN_SHARE"),
                                        description="... or one below this share of the median class size (0: off)")
    augment_max_per_class: int = Field(100, ge=1, le=10_000, validation_alias=_env("ATELIER_AUGMENT_MAX_PER_CLASS"))
    augment_min_confidence: float = Field(0.8, ge=0, le=1, validation_alias=_env("ATELIER_AUGMENT_MIN_CONFIDENCE"),
                                          description="τ: the classifier's probability for the target class")
    augment_near_duplicate_quantile: float = Field(
        0.01, ge=0, le=0.5, validation_alias=_env("ATELIER_AUGMENT_NEAR_DUPLICATE_QUANTILE"),
        description="δ: closer to a training image than this share of real held-out items are is a near-duplicate")
    augment_max_attempts: int = Field(4, ge=1, le=50, validation_alias=_env("ATELIER_AUGMENT_MAX_ATTEMPTS"),
                                      description="candidates generated per requested image, at most")
    augment_min_class_adherence: float = Field(
        0.5, ge=0, le=1, validation_alias=_env("ATELIER_AUGMENT_MIN_CLASS_ADHERENCE"),
        description="classes the generator's evaluation says it draws less faithfully than this are not published")

    judge_min_accuracy: float = Field(
        0.6, ge=0, le=1, validation_alias=_env("ATELIER_JUDGE_MIN_ACCURACY"),
        description="an evaluating classifier below this held-out type accuracy gives no FID-based verdict")

    # --- logging ------------------------------------------------------------------------------
    log_level: str = Field("INFO", validation_alias=_env("LOG_LEVEL"))
    log_json: bool = Field(False, validation_alias=_env("ATELIER_LOG_JSON"))

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Read the environment (once, by the caller's entry point); overrides win."""
        return cls(**overrides)

    @field_validator("webhook_secret", "url_signing_secret", "public_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("augment_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value

    @property
    def augment_dataset_names(self) -> list[str]:
        return [name.strip() for name in self.augment_datasets.split(",") if name.strip()]

    def today(self) -> date:
        """The date in the schedule's timezone: what a nightly run (or one submitted without a date)
        files its outputs under."""
        return datetime.now(ZoneInfo(self.augment_timezone)).date()

    @property
    def visibility_timeout_s(self) -> int:
        # Longer than the longest job so Redis never redelivers a task that is still running.
        return max(self.train_time_limit_s, self.batch_time_limit_s, self.interactive_time_limit_s) + 3600

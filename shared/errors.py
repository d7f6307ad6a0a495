"""Errors with a stable code, shared by the API (as HTTP answers) and the worker (as job errors)."""

from __future__ import annotations


class AtelierError(Exception):
    """An error a user can act on. `code` is stable; `message` is for people."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None,
                 status: int | None = None, details: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.field = field
        self.details = details or {}

    def to_dict(self) -> dict:
        body: dict = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        if self.details:
            body["details"] = self.details
        return body


class ValidationFailed(AtelierError):
    status = 422
    code = "validation_error"


class NotFound(AtelierError):
    status = 404
    code = "not_found"


class Conflict(AtelierError):
    status = 409
    code = "conflict"


class Unauthorized(AtelierError):
    status = 401
    code = "unauthorized"


class Forbidden(AtelierError):
    status = 403
    code = "forbidden"


class RateLimited(AtelierError):
    """429; `retry_after_s` becomes the Retry-After header."""

    status = 429
    code = "too_many_queued_jobs"

    def __init__(self, message: str, *, retry_after_s: int, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after_s = retry_after_s


class JobFailure(AtelierError):
    """Raised inside a job: the job ends `failed` with this code and message."""

    code = "job_failed"


class DatasetMissing(JobFailure):
    code = "dataset_missing"


class ModelUnloadable(JobFailure):
    """A stored model version this worker's code cannot rebuild (written by another release of Atelier,
    during a rolling deploy or after a change was reverted)."""

    code = "model_unloadable"


class JobCanceled(Exception):
    """Raised by plain functions when `should_stop()` says the job was canceled."""


class TransientError(Exception):
    """A dependency (S3, Redis) stayed unavailable past the caller's retry deadline: a job fails with
    `dependency_unavailable`, an API request is answered 503 with Retry-After."""

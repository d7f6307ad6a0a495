"""Logging set-up: plain text for people, JSON (one object a line) for log pipelines. Every record
carries the id of the job being worked on, when there is one."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

from shared.settings import Settings

current_job_id: ContextVar[str | None] = ContextVar("current_job_id", default=None)


class _JobIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = current_job_id.get()
        return True


def configure_logging(settings: Settings) -> None:
    # The real stderr: Celery replaces sys.stderr with a proxy that logs what is written to it, and a
    # handler writing into that proxy from a pool child loses every record to its recursion guard.
    handler = logging.StreamHandler(sys.__stderr__)
    handler.addFilter(_JobIdFilter())
    if settings.log_json:
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s %(job_id)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [job=%(job_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())

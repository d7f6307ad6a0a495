"""JSON logs (ATELIER_LOG_JSON): one object a line, carrying the id of the job being worked on."""

from __future__ import annotations

import json
import logging

import pytest

from shared.logs import configure_logging, current_job_id
from shared.settings import Settings


def test_json_log_lines_carry_the_job_id(capfd: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(Settings(ATELIER_LOG_JSON=True, LOG_LEVEL="INFO"))
        token = current_job_id.set("01a2b3c4d5e6f7a8b9c0d1e2")
        logging.getLogger("worker.test").info("job %s started", "x")
        current_job_id.reset(token)
        logging.getLogger("api.test").warning("no job here")
        lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    assert lines[0]["message"] == "job x started" and lines[0]["job_id"] == "01a2b3c4d5e6f7a8b9c0d1e2"
    assert lines[0]["levelname"] == "INFO" and lines[0]["name"] == "worker.test" and "asctime" in lines[0]
    assert lines[1]["job_id"] is None and lines[1]["levelname"] == "WARNING"

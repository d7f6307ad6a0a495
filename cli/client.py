"""A small HTTP client for the Atelier API, with errors a person can act on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests


class CliError(Exception):
    """Printed as is; `exit_code` tells scripts what went wrong."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


UNREACHABLE, UNAUTHORIZED = 3, 4


@dataclass
class AtelierClient:
    base_url: str
    api_key: str | None = None
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self.http = requests.Session()
        self.http.headers["User-Agent"] = "atelier-cli/1"
        if self.api_key:
            self.http.headers["Authorization"] = f"Bearer {self.api_key}"

    def request(self, method: str, path: str, *, wait_s: int = 0, stream: bool = False,
                **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {}) or {}
        if wait_s:
            headers["Prefer"] = f"wait={wait_s}"
        try:
            response = self.http.request(method, self.base_url + path, headers=headers, stream=stream,
                                         timeout=self.timeout_s + wait_s, **kwargs)
        except requests.ConnectionError as exc:
            raise CliError(f"cannot reach Atelier at {self.base_url}: is the service running (`make run`)? "
                           "Point the CLI elsewhere with --url or ATELIER_URL.", UNREACHABLE) from exc
        except requests.Timeout as exc:
            raise CliError(f"Atelier at {self.base_url} did not answer in time", UNREACHABLE) from exc
        if response.status_code < 400:
            return response
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            error = {"code": f"http_{response.status_code}", "message": response.text[:200]}
        where = f" ({error['field']})" if error.get("field") else ""
        message = f"{error.get('code')}{where}: {error.get('message')}"
        if response.status_code == 401:
            hint = "set ATELIER_API_KEY or pass --key" if not self.api_key else "check the key with your administrator"
            raise CliError(f"the service refused the API key: {message}; {hint}", UNAUTHORIZED)
        if response.status_code == 429:
            message += f" (retry after {response.headers.get('Retry-After', '?')} s)"
        raise CliError(message)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def submit(self, body: dict, idempotency_key: str | None = None, wait_s: int = 0) -> dict:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.json("POST", "/v1/jobs", json=body, headers=headers, wait_s=wait_s)

    def job(self, job_id: str, wait_s: int = 0) -> dict:
        return self.json("GET", f"/v1/jobs/{job_id}", wait_s=wait_s)

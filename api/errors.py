"""Every error leaves the API as JSON {"error": {"code", "message", "field"?}} with the right status."""

from __future__ import annotations

import logging
import re

import redis
from flask import Flask, Response, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from shared.errors import AtelierError, RateLimited, TransientError, Unauthorized

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    406: "not_acceptable", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
    422: "validation_error", 429: "too_many_requests", 503: "unavailable",
}


def error_response(status: int, code: str, message: str, field: str | None = None,
                   details: dict | None = None) -> Response:
    body: dict = {"code": code, "message": message}
    if field:
        body["field"] = field
    if details:
        body["details"] = details
    response = jsonify(error=body)
    response.status_code = status
    return response


# pydantic names union members in error locations ("constrained-str", "function-before[...]")
_TYPE_LABEL = re.compile(r"^(constrained-)?(str|int|float|bool|none)$|^function-|^nullable\[|^lax-")


def _field_path(loc: tuple, body: object) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and _TYPE_LABEL.match(p))]
    # A discriminated union puts the tag first ("train", "input", "n"): the user wrote input.n.
    if parts and isinstance(body, dict) and parts[0] == str(body.get("type")):
        parts = parts[1:]
    return ".".join(parts)


def validation_error_response(exc: ValidationError) -> Response:
    """flask-openapi3's hook: pydantic errors become our error body, naming the first bad field."""
    body = request.get_json(silent=True) if request.is_json else None
    errors = []
    for err in exc.errors(include_url=False, include_input=False):
        field = _field_path(err["loc"], body)
        message = err["msg"]
        if err["type"] in {"union_tag_invalid", "union_tag_not_found"}:
            field = "type"
            message = "unknown or missing job type; expected one of: " + err.get("ctx", {}).get(
                "expected_tags", "").replace("'", "")
        elif err["type"] == "extra_forbidden":
            message = "unknown field"
        errors.append({"field": field or "body", "message": message, "type": err["type"]})
    first = errors[0] if errors else {"field": "body", "message": "invalid request"}
    return error_response(422, "validation_error", f"{first['field']}: {first['message']}",
                          field=first["field"], details={"errors": errors} if len(errors) > 1 else None)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(AtelierError)
    def _atelier(exc: AtelierError) -> Response:
        response = error_response(exc.status, exc.code, exc.message, exc.field, exc.details or None)
        if isinstance(exc, RateLimited):
            response.headers["Retry-After"] = str(exc.retry_after_s)
        if isinstance(exc, Unauthorized):
            response.headers["WWW-Authenticate"] = 'Bearer realm="atelier"'
        return response

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        if exc.response is not None and exc.response.mimetype == "application/json":
            return exc.response  # already ours (flask-openapi3 aborts with our validation body)
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            message = "request body is too large"
        response = error_response(status, _HTTP_CODES.get(status, "http_error"), message)
        allowed = getattr(exc, "valid_methods", None)
        if status == 405 and allowed:
            response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    def _redis_down(exc: Exception) -> Response:
        log.error("redis unavailable: %s", exc)
        response = error_response(503, "unavailable", "the job store is unavailable; retry shortly")
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(TransientError)
    def _storage_down(exc: TransientError) -> Response:
        log.error("dependency unavailable: %s", exc)
        response = error_response(503, "unavailable", "object storage is unavailable; retry shortly")
        response.headers["Retry-After"] = "10"
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "an internal error occurred; it has been logged")

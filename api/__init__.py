"""The Atelier HTTP API: a Flask app factory. It validates, records jobs and enqueues them by task
name; it never imports torch."""

from __future__ import annotations

from flask import Response, jsonify
from flask_openapi3 import Info, OpenAPI
from werkzeug.middleware.proxy_fix import ProxyFix

from api.auth import KeyRing, Sessions, authenticate
from api.console.routes import console_bp
from api.datasets_routes import datasets_bp
from api.errors import register_error_handlers, validation_error_response
from api.files_routes import files_bp
from api.health_routes import health_bp
from api.jobs_routes import jobs_bp
from api.json_provider import StrictJSONProvider
from api.metrics import metrics_bp, metrics_registry
from api.models_routes import models_bp
from api.services import Services
from shared.logs import configure_logging
from shared.schemas import ErrorResponse
from shared.settings import Settings

API_VERSION = "1.0.0"


def create_app(settings: Settings | None = None, services: Services | None = None) -> OpenAPI:
    """Build the app. Tests pass their own settings; production reads the environment once here."""
    settings = settings or Settings.from_env()
    configure_logging(settings)
    app = OpenAPI(
        __name__,
        info=Info(title="Atelier", version=API_VERSION,
                  description="Asynchronous image and description generation for fashion merchandising."),
        # stated explicitly: without it the document says securitySchemes: null, which validators reject
        security_schemes={"bearer": {"type": "http", "scheme": "bearer",
                                     "description": "an API key, when the operator has configured keys"}},
        doc_prefix="/docs",
        validation_error_status=422,
        validation_error_model=ErrorResponse,
        validation_error_callback=validation_error_response,
    )
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    if settings.trusted_proxies:  # behind TLS termination: the console's Secure cookie and Origin check see https
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    app.json = StrictJSONProvider(app)
    app.json.sort_keys = False
    app.extensions["atelier"] = services or Services.build(settings)
    app.extensions["atelier_keys"] = KeyRing.from_settings(settings)
    app.extensions["atelier_sessions"] = Sessions(app.extensions["atelier"].store.redis, settings.console_session_s)
    app.extensions["atelier_metrics"] = metrics_registry(app.extensions["atelier"].store.redis)
    register_error_handlers(app)
    app.before_request(authenticate)
    app.register_api(health_bp)
    app.register_api(jobs_bp)
    app.register_api(models_bp)
    app.register_api(datasets_bp)
    app.register_blueprint(metrics_bp)
    app.register_blueprint(files_bp)
    app.register_blueprint(console_bp)

    @app.get("/openapi.json", doc_ui=False)
    def openapi_document() -> Response:
        return jsonify(app.api_doc)

    return app

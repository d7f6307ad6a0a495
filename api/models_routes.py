"""/v1/models: list model versions and choose the active one per family."""

from __future__ import annotations

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import Field

from api.auth import BEARER, require_admin
from api.dataset_access import model_visible
from api.services import services
from shared.schemas import ErrorResponse, ModelList, ModelPath, ModelVersion, StrictModel

models_bp = APIBlueprint("models", __name__, url_prefix="/v1/models", abp_tags=[Tag(name="models")],
                       abp_security=BEARER,
                         abp_responses={"401": ErrorResponse, "404": ErrorResponse, "422": ErrorResponse})


class ModelsQuery(StrictModel):
    family: str | None = Field(None, max_length=40)


@models_bp.get("", responses={"200": ModelList})
def list_models(query: ModelsQuery) -> Response:
    """Model versions by family: dataset, metrics, condition vocabulary and which one is active; those
    trained on another key's dataset are left out (active versions are shared)."""
    models = services().registry.list(query.family)
    return jsonify(models=[m.model_dump(mode="json") for m in models if model_visible(m)])


@models_bp.post("/<family>/<version>/activate", responses={"200": ModelVersion, "403": ErrorResponse})
def activate_model(path: ModelPath) -> Response:
    """Make this version the one jobs use by default (an admin key's decision when keys are on)."""
    require_admin()
    model = services().registry.activate(path.family, path.version)
    return jsonify(model.model_dump(mode="json"))

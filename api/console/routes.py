"""Console pages: home (submit + recent jobs), a job's page (progress, gallery, downloads), training,
and signing in with an API key when keys are configured (kept in an HttpOnly, SameSite=Strict
cookie, so the pages' own calls to /v1 carry it and other sites' pages cannot)."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, Response, current_app, g, redirect, render_template, request, url_for

from api.auth import COOKIE, KeyRing, Sessions
from api.dataset_access import may_read, model_visible
from api.datasets_routes import imported_names
from api.files_routes import image_response
from api.jobs_routes import owned_job, public_job
from api.services import services
from shared.errors import NotFound
from shared.families import GENERATORS_DEFAULT_FIRST
from shared.schemas import BUILTIN_DATASETS, IMAGE_FAMILIES, Family, Preset

console_bp = Blueprint("console", __name__, template_folder="templates", static_folder="static",
                       static_url_path="/static/console")
_CURSOR = re.compile(r"^[0-9a-f]{1,64}$")


def _keys() -> KeyRing:
    return current_app.extensions["atelier_keys"]


def _sessions() -> Sessions:
    return current_app.extensions["atelier_sessions"]


def signed_in(view: Callable[..., Any]) -> Callable[..., Any]:
    """A console page: a visitor without a valid key (when keys are on) is sent to sign in."""

    @wraps(view)
    def page(*args: Any, **kwargs: Any) -> Any:
        if g.get("caller") is None:
            return redirect(url_for("console.login"))
        return view(*args, **kwargs)

    return page


@console_bp.context_processor
def _globals() -> dict[str, Any]:
    caller = g.get("caller")
    return {"keys_enabled": _keys().enabled, "caller": caller}


@console_bp.get("/")
@signed_in
def home() -> Response | str:
    caller = g.caller
    cursor = request.args.get("cursor", "")
    cursor = cursor if _CURSOR.match(cursor) else None
    jobs, older = services().store.list(owner=None if caller.admin else caller.owner, limit=25, cursor=cursor)
    image_models = [m for m in services().registry.list(None) if m.family in IMAGE_FAMILIES and model_visible(m)]
    return render_template("home.html", jobs=jobs, older=older, image_models=image_models,
                           image_families=GENERATORS_DEFAULT_FIRST)


@console_bp.get("/jobs/<job_id>")
@signed_in
def job_page(job_id: str) -> Response | str:
    try:
        job = owned_job(job_id[:64])
    except NotFound:
        return render_template("not_found.html", job_id=job_id), 404
    return render_template("job.html", job=public_job(job))


@console_bp.get("/similar")
@signed_in
def similar_page() -> Response | str:
    """Visual search: upload a photo, or arrive from a catalog item's or a generated image's "Similar"."""
    classifiers = [m for m in services().registry.list("classifier") if model_visible(m)]
    item = request.args.get("item", "")[:100]
    job_id, index = request.args.get("job", "")[:64], request.args.get("index", "")
    image = url_for("console.job_image", job_id=job_id, index=int(index)) if job_id and index.isdigit() else None
    return render_template("similar.html", classifiers=classifiers, item=item, image=image,
                           chosen=request.args.get("classifier", "")[:40])


@console_bp.get("/jobs/<job_id>/images/<int:index>")
@signed_in
def job_image(job_id: str, index: int) -> Response | tuple[str, int]:
    """A generated image, same-origin, so the similar page can send its bytes (the owner's only)."""
    try:
        job = owned_job(job_id[:64])
    except NotFound:
        return "not found", 404
    response = image_response(job.output, index)
    return ("not found", 404) if response is None else response


@console_bp.get("/train")
@signed_in
def train_page() -> Response | str:
    datasets = sorted(set(BUILTIN_DATASETS) | {n for n in imported_names() if may_read(n)})
    return render_template("train.html", families=[f.value for f in Family],
                           presets=[p.value for p in Preset], datasets=datasets)


@console_bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str:
    if not _keys().enabled:
        return redirect(url_for("console.home"))
    error = None
    if request.method == "POST":
        key = (request.form.get("key") or "").strip()
        caller = _keys().lookup(key) if key else None
        if caller is not None:
            response = redirect(url_for("console.home"))
            # the cookie holds a server-side session's id, never the key
            response.set_cookie(COOKIE, _sessions().open(caller.owner), max_age=_sessions().ttl_s, httponly=True,
                                samesite="Strict", secure=request.is_secure)
            return response
        error = "That key is not known. Ask your administrator for a key."
    return render_template("login.html", error=error), 401 if error else 200


@console_bp.post("/logout")
def logout() -> Response:
    if request.cookies.get(COOKIE):
        _sessions().close(request.cookies[COOKIE])  # the session ends now, not when the cookie expires
    response = redirect(url_for("console.login"))
    response.delete_cookie(COOKIE)
    return response

"""/files: generated images by their signed URLs, which work without a key, like presigned S3 URLs.

A `generate_images` job keeps its images in one archive; each image's URL names the job and the
image, carries an expiry and an HMAC over both (shared/image_urls.py), and is answered with one
ranged GET of the archive."""

from __future__ import annotations

from flask import Blueprint, Response, request

from api.services import services
from shared.errors import Forbidden, NotFound

files_bp = Blueprint("files", __name__)


@files_bp.get("/files/jobs/<job_id>/images/<int:index>.png")
def job_image(job_id: str, index: int) -> Response:
    svc = services()
    expires, signature = request.args.get("expires", ""), request.args.get("signature", "")
    if not signature:
        raise Forbidden("this image URL is not signed; take the URL from the job's output", field="signature")
    if not svc.image_urls.valid(job_id[:64], index, expires, signature[:64]):
        raise Forbidden("this image URL has expired or its signature does not match; fetch the job again for a "
                        "fresh URL", code="url_not_valid", field="signature")
    job = svc.store.get(job_id)
    response = image_response(job.output if job else None, index)
    if response is None:
        raise NotFound(f"job {job_id} has no image {index}", field="index")
    return response


def image_response(output: dict | None, index: int) -> Response | None:
    """A job's image `index` as PNG, cached by the browser (a job's images never change): its byte
    range of the images archive, or its own object for jobs from before the archive; None when the
    output has no such image."""
    images = (output or {}).get("images") or []
    image = images[index] if 0 <= index < len(images) and isinstance(images[index], dict) else {}
    storage = services().storage
    if "archive" in image and (output or {}).get("images_archive"):
        placed = image["archive"]
        data = storage.get_range(output["images_archive"]["key"], int(placed["offset"]), int(placed["length"]))
    elif "key" in image:
        data = storage.get(image["key"])
    else:
        return None
    return Response(data, mimetype="image/png", headers={"Cache-Control": "private, max-age=3600"})

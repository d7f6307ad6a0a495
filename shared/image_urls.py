"""URLs of generated images, which live as byte ranges of one archive per job.

A `generate_images` job stores its images as one uncompressed zip (`images.zip`) plus the contact
sheet: one object instead of 65, which is most of the job's time on a small machine (docs/BENCHMARKS.md).
Each image still gets a URL of its own that works without a key, like a presigned S3 URL: the API
signs `/files/jobs/<id>/images/<index>.png` with an expiry (HMAC-SHA256), and answers it with one
ranged GET of the archive.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from typing import Any

from shared.settings import Settings

log = logging.getLogger(__name__)
PATH = "/files/jobs/{job_id}/images/{index}.png"


class ImageUrlSigner:
    def __init__(self, secret: bytes, expiry_s: int) -> None:
        self.secret = secret
        self.expiry_s = expiry_s

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageUrlSigner:
        if settings.url_signing_secret:
            secret = settings.url_signing_secret.encode()
        elif settings.s3_secret_access_key:
            # every API process and worker holds this key already; a label keeps the derived key apart
            secret = hmac.new(settings.s3_secret_access_key.encode(), b"atelier image urls", hashlib.sha256).digest()
        else:
            log.warning("no ATELIER_URL_SIGNING_SECRET or S3 secret key: image URLs are valid in this process only")
            secret = secrets.token_bytes(32)
        return cls(secret, settings.presign_expiry_s)

    def _signature(self, job_id: str, index: int, expires: int) -> str:
        return hmac.new(self.secret, f"{job_id}/{index}/{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    def path(self, job_id: str, index: int, now: float | None = None) -> str:
        """The signed path (no host): valid for `expiry_s` from now."""
        expires = int((now if now is not None else time.time()) + self.expiry_s)
        return (PATH.format(job_id=job_id, index=index)
                + f"?expires={expires}&signature={self._signature(job_id, index, expires)}")

    def url(self, base: str, job_id: str, index: int) -> str:
        """The signed URL under the API's address `base` (see `api_address`)."""
        return base + self.path(job_id, index)

    def valid(self, job_id: str, index: int, expires: str, signature: str, now: float | None = None) -> bool:
        try:
            when = int(expires)
        except ValueError:
            return False
        if when < (now if now is not None else time.time()):
            return False
        return hmac.compare_digest(self._signature(job_id, index, when), signature)


def api_address(settings: Settings, request_host: str | None = None) -> str:
    """Where clients reach the API: `ATELIER_PUBLIC_URL`, else the host a request came to, else (for
    URLs written outside a request, such as webhook payloads) the local port."""
    return (settings.public_url or request_host or f"http://127.0.0.1:{settings.port}").rstrip("/")


def with_image_urls(job_id: str, output: dict[str, Any], url: Any) -> None:
    """Give every archived image of a job output its own `url` (in place); `url(job_id, index)`."""
    if not output.get("images_archive"):
        return
    for image in output.get("images") or []:
        if isinstance(image, dict) and "archive" in image:
            image["url"] = url(job_id, image["index"])

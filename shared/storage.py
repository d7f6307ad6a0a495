"""Object storage through boto3: one code path for SeaweedFS in development and AWS S3/MinIO in production."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import wait
from dataclasses import dataclass
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import TransientError
from shared.settings import Settings
from shared.thread_pools import thread_pool

log = logging.getLogger(__name__)

# botocore retries a failed call a couple of times within a second or two; an outage longer than that
# is ridden out by Storage._call, with backoff, until its deadline.
_RETRIES = Config(retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": "path"},
                  connect_timeout=5, read_timeout=60, max_pool_connections=32, signature_version="s3v4",
                  # A CRC32 trailer on every put cost ~20 % of a small upload's time here (measured);
                  # compute checksums only where an S3 API requires them.
                  request_checksum_calculation="when_required", response_checksum_validation="when_required")


@dataclass(frozen=True)
class PutItem:
    key: str
    body: bytes | Callable[[], bytes]  # a callable is run in the upload thread (PNG encoding overlaps uploads)
    content_type: str = "application/octet-stream"


_UNAVAILABLE_CODES = {"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown",
                      "RequestTimeout"}


def _unavailable(exc: BaseException) -> bool:
    """The store could not answer (down, restarting, overloaded), as opposed to a definite answer
    such as 404 or 403 that a retry would only repeat."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code")) in _UNAVAILABLE_CODES
    return isinstance(exc, BotoCoreError)


class Storage:
    """A bucket. Thread-safe (boto3 clients are); create one per process, after any fork.

    Every call rides out an unavailable store (connection refused, 5xx) with exponential backoff until
    `retry_deadline_s` has passed since it began, then raises TransientError: workers wait out an
    outage of minutes (`ATELIER_S3_RETRY_DEADLINE_SECONDS`), the API answers 503 within seconds."""

    def __init__(self, settings: Settings, retry_deadline_s: float | None = None) -> None:
        self.retry_deadline_s = settings.s3_retry_deadline_s if retry_deadline_s is None else retry_deadline_s
        self.bucket = settings.s3_bucket
        self.presign_expiry_s = settings.presign_expiry_s
        self.upload_concurrency = settings.upload_concurrency
        self._create_bucket = settings.s3_create_bucket
        self._bucket_checked = False
        session = boto3.session.Session(
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=settings.s3_secret_access_key,
            region_name=settings.s3_region,
        )
        self.client = session.client("s3", endpoint_url=settings.s3_endpoint_url, config=_RETRIES)
        # Presigned URLs are signed for the endpoint clients use, which may differ from ours.
        public = settings.s3_public_endpoint_url or settings.s3_endpoint_url
        self._presigner = (self.client if public == settings.s3_endpoint_url
                           else session.client("s3", endpoint_url=public, config=_RETRIES))

    def _call(self, operation: Callable[[], Any], what: str) -> Any:
        deadline = time.monotonic() + self.retry_deadline_s
        delay = 0.5
        while True:
            try:
                return operation()
            except (BotoCoreError, ClientError) as exc:
                if not _unavailable(exc):
                    raise
                if time.monotonic() + delay > deadline:
                    raise TransientError(f"object storage unavailable ({what}): {exc}") from exc
                log.warning("object storage unavailable (%s): %s; retrying in %.1f s", what, exc, delay)
                time.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 8.0)

    def ensure_bucket(self) -> None:
        if self._bucket_checked:
            return
        try:
            self._call(lambda: self.client.head_bucket(Bucket=self.bucket), "head bucket")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code not in {"404", "NoSuchBucket", "NotFound"} or not self._create_bucket:
                raise
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except ClientError as create_exc:  # another process created it first
                if create_exc.response.get("Error", {}).get("Code") not in {
                    "BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise
            log.info("created bucket %s", self.bucket)
        self._bucket_checked = True

    def put(self, key: str, body: bytes | Callable[[], bytes],
            content_type: str = "application/octet-stream") -> None:
        self.ensure_bucket()
        if callable(body):
            body = body()
        self._call(lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type),
                   f"put {key}")

    def put_file(self, key: str, fileobj: BinaryIO, content_type: str = "application/octet-stream") -> None:
        """Stream a large file (uploads) in multipart chunks instead of holding it in memory."""
        self.ensure_bucket()

        def upload() -> None:
            fileobj.seek(0)  # a retry starts the upload over
            self.client.upload_fileobj(fileobj, self.bucket, key, ExtraArgs={"ContentType": content_type})

        self._call(upload, f"upload {key}")

    def put_json(self, key: str, value: Any) -> None:
        self.put(key, json.dumps(value, indent=2, sort_keys=True, default=str).encode(), "application/json")

    def put_many(self, items: Iterable[PutItem]) -> None:
        """Upload concurrently: one put is a round trip (~200 ms on SeaweedFS), so serial uploads of
        64 images would dominate a generate job."""
        items = list(items)
        if not items:
            return
        self.ensure_bucket()
        pool = thread_pool("uploads", self.upload_concurrency)
        futures = [pool.submit(self.put, i.key, i.body, i.content_type) for i in items]
        try:
            for future in futures:
                future.result()
        except BaseException:
            # The pool outlives the call: leave no upload of a failed job running or queued in it.
            for future in futures:
                future.cancel()
            wait(futures)
            raise

    def get(self, key: str) -> bytes:
        return self._call(lambda: self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read(), f"get {key}")

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """`length` bytes of an object from `offset` (one ranged GET: an image inside a job's archive)."""
        byte_range = f"bytes={offset}-{offset + length - 1}"
        return self._call(lambda: self.client.get_object(Bucket=self.bucket, Key=key, Range=byte_range)["Body"].read(),
                          f"get {key} {byte_range}")

    def copy_to(self, key: str, fileobj: BinaryIO) -> None:
        """Stream an object into a file in chunks (archives of large checkpoints), never whole in memory.
        A missing object raises ClientError (404); an outage, TransientError."""
        self._call(lambda: self.client.download_fileobj(self.bucket, key, fileobj), f"download {key}")

    def get_json(self, key: str) -> Any:
        return json.loads(self.get(key))

    def exists(self, key: str) -> bool:
        try:
            self._call(lambda: self.client.head_object(Bucket=self.bucket, Key=key), f"head {key}")
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise

    def list(self, prefix: str) -> Iterator[str]:
        self.ensure_bucket()  # a fresh store lists as empty rather than failing
        token: dict[str, str] = {}
        while True:  # page by page, each page retried on its own, so a retry never repeats keys
            page = self._call(lambda t=token: self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, **t),
                              f"list {prefix}")
            for item in page.get("Contents", []):
                yield item["Key"]
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def delete(self, key: str) -> None:
        self._call(lambda: self.client.delete_object(Bucket=self.bucket, Key=key), f"delete {key}")

    def delete_prefix(self, prefix: str) -> int:
        keys = list(self.list(prefix))
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": k} for k in keys[start:start + 1000]]
            self._call(lambda c=chunk: self.client.delete_objects(Bucket=self.bucket,
                                                                  Delete={"Objects": c, "Quiet": True}),
                       f"delete {prefix}")
        return len(keys)

    def presigned_url(self, key: str, expiry_s: int | None = None) -> str:
        return self._presigner.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expiry_s or self.presign_expiry_s
        )

    def ping(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)

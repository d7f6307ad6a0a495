"""A generate job's images as one archive: byte ranges that are exactly each PNG, the same bytes for
the same pixels, and signed URLs that expire and cannot be pointed at another image or job."""

from __future__ import annotations

import io
import zipfile

import numpy as np
from PIL import Image

from shared.image_urls import ImageUrlSigner, with_image_urls
from worker.images import png_archive, png_bytes


def test_each_range_is_exactly_that_png() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(9, 16, 12, 3), dtype=np.uint8)
    data, placed = png_archive(images)
    assert [p.name for p in placed] == [f"{i:03d}.png" for i in range(9)]
    for image, p in zip(images, placed, strict=True):
        chunk = data[p.offset:p.offset + p.length]
        assert chunk == png_bytes(image)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(chunk))), image)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:  # an ordinary zip for whoever downloads it
        assert archive.testzip() is None and archive.read("004.png") == png_bytes(images[4])
    assert png_archive(images)[0] == data  # deterministic: same seeds, same archive bytes


def test_grey_images_and_an_empty_request() -> None:
    grey = np.zeros((2, 28, 28, 1), dtype=np.uint8)
    data, placed = png_archive(grey)
    assert Image.open(io.BytesIO(data[placed[1].offset:placed[1].offset + placed[1].length])).mode == "L"
    assert png_archive(np.zeros((0, 28, 28, 1), dtype=np.uint8))[1] == []


def test_signed_image_urls() -> None:
    signer = ImageUrlSigner(b"k" * 32, expiry_s=600)
    path = signer.path("job1", 3, now=1000.0)
    query = dict(part.split("=") for part in path.split("?")[1].split("&"))
    assert path.startswith("/files/jobs/job1/images/3.png?") and query["expires"] == "1600"
    assert signer.valid("job1", 3, query["expires"], query["signature"], now=1500)
    assert not signer.valid("job1", 3, query["expires"], query["signature"], now=1601)  # expired
    assert not signer.valid("job1", 4, query["expires"], query["signature"], now=1500)  # another image
    assert not signer.valid("job2", 3, query["expires"], query["signature"], now=1500)  # another job
    assert not signer.valid("job1", 3, "99999", query["signature"], now=1500)  # a later expiry
    assert not signer.valid("job1", 3, "soon", query["signature"], now=1500)
    assert not ImageUrlSigner(b"x" * 32, 600).valid("job1", 3, query["expires"], query["signature"], now=1500)


def test_only_archived_images_get_urls() -> None:
    output = {"images_archive": {"key": "jobs/j/images.zip"},
              "images": [{"index": 0, "archive": {"offset": 1, "length": 2}}, {"index": 1, "key": "old.png"}]}
    with_image_urls("j", output, lambda job_id, index: f"{job_id}:{index}")
    assert output["images"][0]["url"] == "j:0" and "url" not in output["images"][1]

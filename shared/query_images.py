"""Photos sent in a JSON body (base64): checked before anything decodes them in full. Only JPEG and
PNG are accepted, whatever the bytes claim to be, within a byte and a pixel limit; the API checks at
submit (a 422 naming the field) and the worker checks again before it decodes."""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image, UnidentifiedImageError

from shared.errors import ValidationFailed

ALLOWED_FORMATS = ("JPEG", "PNG")
MAX_IMAGE_BYTES = 4 * 1024 * 1024  # decoded; the request body limit usually binds first
MAX_IMAGE_PIXELS = 4096 * 4096


def decode_base64_image(value: str, field: str) -> bytes:
    """The image's bytes, after checking the base64, the format, the size and the pixel count; any
    problem is a ValidationFailed naming `field`."""
    text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value  # a data: URL too
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationFailed("the image is not valid base64", code="invalid_image", field=field) from exc
    if len(data) > MAX_IMAGE_BYTES:
        raise ValidationFailed(f"the image is {len(data)} bytes; at most {MAX_IMAGE_BYTES}", code="image_too_large",
                               field=field)
    check_image(data, field)
    return data


def check_image(data: bytes, field: str) -> tuple[int, int]:
    """(width, height) of a JPEG or PNG, read from its header and verified without decoding pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:
                size = img.size
                if size[0] * size[1] > MAX_IMAGE_PIXELS:
                    raise ValidationFailed(f"the image is {size[0]}x{size[1]} pixels; at most {MAX_IMAGE_PIXELS}",
                                           code="image_too_large", field=field)
                img.verify()
    except ValidationFailed:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise ValidationFailed(f"the image is not a readable {' or '.join(ALLOWED_FORMATS)} file",
                               code="invalid_image", field=field) from exc
    return size


def decode_rgb(data: bytes, field: str) -> Image.Image:
    """Bytes that `decode_base64_image` has checked, decoded to RGB."""
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValidationFailed("the image could not be decoded", code="invalid_image", field=field) from exc

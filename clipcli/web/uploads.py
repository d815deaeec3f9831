"""Images uploaded to search by: read up to a cap on bytes, refused beyond a cap on pixels
before any pixel is decoded, and embedded from a file of a private temporary folder, which
never carries a name the upload chose and is gone when the search is."""

from __future__ import annotations

import io
import struct
import tempfile
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message, Receive

from clipcli.errors import ClipcliError, UsageError
from clipcli.media import heif
from clipcli.media.decode import ImageDecodeError
from clipcli.query import image_vectors

if TYPE_CHECKING:
    from clipcli.encoders.protocols import ImageEncoder
    from clipcli.vectors import Embeddings

# A camera's largest JPEGs are 10-15 MB; a PNG screenshot of a 5K display about as much.
MAX_UPLOAD_BYTES = 20 * 2**20
# Beyond a 45-MP camera's 8256x5504; decoded as RGB, 40 MP is 120 MB of memory per upload.
MAX_UPLOAD_PIXELS = 40_000_000
IMAGE_FIELD = "image"
# What Pillow raises for a header it cannot make sense of (as clipcli.media.decode lists them),
# and libheif's RuntimeError.
_HEADER_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    RuntimeError,
)


class UploadTooLarge(ClipcliError):
    """An upload over the cap on bytes or on pixels."""


async def uploaded_image(request: Request, limit: int = MAX_UPLOAD_BYTES) -> bytes:
    """The bytes of the image a POST sends: a multipart form's `image` field, else the whole
    body. UploadTooLarge past `limit` bytes, none of which are read beyond it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise UploadTooLarge(_too_many_bytes(limit))
    capped = Request(request.scope, _capped(request.receive, limit))
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with capped.form(max_files=1, max_fields=16) as form:
            item = form.get(IMAGE_FIELD)
            if not isinstance(item, UploadFile):
                raise UsageError(
                    "no image in the form", hint=f"send it as the field '{IMAGE_FIELD}'"
                )
            data = await item.read()
    else:
        data = await capped.body()
    if not data:
        raise UsageError("the upload is empty", hint="send an image")
    return data


def _capped(receive: Receive, limit: int) -> Receive:
    """`receive`, raising UploadTooLarge once the body it has given passes `limit` bytes."""
    total = 0

    async def receive_capped() -> Message:
        nonlocal total
        message = await receive()
        total += len(message.get("body", b""))
        if total > limit:
            raise UploadTooLarge(_too_many_bytes(limit))
        return message

    return receive_capped


def _too_many_bytes(limit: int) -> str:
    return f"the upload is over {limit // 2**20} MB"


def check_pixels(data: bytes, limit: int = MAX_UPLOAD_PIXELS) -> None:
    """UploadTooLarge when the image's header claims more than `limit` pixels; UsageError when
    there is no image header to read. Only the header is read: a file a few hundred bytes
    long can claim 20000x20000 pixels, which decoded would take over a gigabyte."""
    if heif.container(data[: heif.HEADER_SIZE]) == "HEIF":
        heif.register_heif_opener()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError:  # more than twice Pillow's own limit, far over ours
        raise UploadTooLarge(_too_many_pixels(limit)) from None
    except _HEADER_ERRORS:
        raise UsageError("the upload is not an image clipcli can read") from None
    if width * height > limit:
        raise UploadTooLarge(f"{_too_many_pixels(limit)} ({width}x{height})")


def _too_many_pixels(limit: int) -> str:
    return f"the image is over {limit / 1e6:.0f} megapixels"


def upload_vector(data: bytes, encoder: Callable[[], ImageEncoder]) -> Embeddings:
    """The unit embedding of an uploaded image, checked (check_pixels) before `encoder` is
    even loaded, and decoded as indexing decodes a photo."""
    check_pixels(data)
    with tempfile.TemporaryDirectory(prefix="clipcli-upload-") as folder:  # only ours to read
        path = Path(folder) / "upload"  # no suffix: formats are told by their content
        path.write_bytes(data)
        try:
            return image_vectors(encoder(), [path])[0]
        except ImageDecodeError as exc:
            raise UsageError(
                f"the upload is not an image clipcli can read ({exc.reason})"
            ) from None

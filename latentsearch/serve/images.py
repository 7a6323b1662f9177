"""Images over HTTP: uploads in, stored pixels out.

An upload (base64, or a ``data:`` URL) is written to a temporary file and read by
:func:`latentsearch.pipelines.read_query_image`, the reader behind ``query --image``, so the
server decodes exactly what the command line decodes, behind the same pixel guard (the
header's size is checked before anything is decoded). Bytes that are no image file are
refused by their first bytes, before any decoder (and TensorFlow) is touched.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile

import numpy as np

from latentsearch.collection import Collection
from latentsearch.errors import InvalidInput
from latentsearch.io.png import PNG_SIGNATURE, encode_png
from latentsearch.pipelines import read_query_image

__all__ = ["decode_upload", "upload_format", "read_upload", "thumbnail_png", "THUMBNAIL_SIDE"]

#: the shorter side of a stored image as served (nearest-neighbour upscaling)
THUMBNAIL_SIDE = 112


def decode_upload(text: str) -> bytes:
    """The bytes of a base64 upload (an optional ``data:<type>;base64,`` prefix dropped)."""
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise InvalidInput("an image data: URL must be base64 (data:image/png;base64,...)")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("the image is not valid base64") from None
    if not data:
        raise InvalidInput("the image is empty")
    return data


def upload_format(data: bytes) -> str:
    """The image format named by the file's first bytes; InvalidInput for anything else."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] in (b"II*\0", b"MM\0*"):
        return "tif"
    raise InvalidInput("the upload is not an image (expected a PNG, JPEG or WebP file; "
                       "GIF, BMP and TIFF are read too)")


def read_upload(col: Collection, text: str) -> np.ndarray:
    """An uploaded image as ``col``'s encoder takes it: uint8 (size, size, channels)."""
    data = decode_upload(text)
    fmt = upload_format(data)
    fd, path = tempfile.mkstemp(prefix="latentsearch-upload-", suffix="." + fmt)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            return read_query_image(col, path)
        except InvalidInput as exc:  # its messages name the file: not the client's business
            raise type(exc)(str(exc).replace(path, "the uploaded image")) from None
    finally:
        os.unlink(path)


def thumbnail_png(pixels: np.ndarray, side: int = THUMBNAIL_SIDE) -> bytes:
    """Stored pixels (H, W, C) as a PNG, scaled up by a whole factor (nearest neighbour) to
    at least ``side`` pixels a side, for viewing."""
    img = np.asarray(pixels)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    h, w = img.shape[:2]
    factor = max(1, -(-side // max(1, min(h, w))))
    if factor > 1:
        img = np.repeat(np.repeat(img, factor, axis=0), factor, axis=1)
    return encode_png(img)

"""Pictures out, through Pillow: PNG bytes, and picture files in the format their suffix names.

* :func:`encode_png` turns uint8 pixels into PNG bytes (the server's thumbnails, tests).
* :func:`picture_format` says which format a picture path asks for (.png, .jpg/.jpeg,
  .webp), or refuses any other suffix before the picture is drawn.
* :func:`save_picture` writes a Pillow image there.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from latentsearch.errors import DimensionMismatch, InvalidInput
from latentsearch.io.pixels import to_uint8

__all__ = ["PNG_SIGNATURE", "PICTURE_FORMATS", "encode_png", "picture_format", "save_picture"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: picture suffixes and the Pillow format each writes
PICTURE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 (H, W), (H, W, 1) or (H, W, 3) as the bytes of an 8-bit gray or RGB PNG."""
    img = np.ascontiguousarray(to_uint8(pixels, "picture"))
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise DimensionMismatch(f"a PNG needs (H, W) or (H, W, 3) pixels, got {img.shape}")
    out = io.BytesIO()
    Image.fromarray(img).save(out, format="PNG")
    return out.getvalue()


def picture_format(path: str | Path) -> str:
    """The Pillow format a picture path asks for by its suffix; InvalidInput for others."""
    suffix = Path(path).suffix.lower()
    try:
        return PICTURE_FORMATS[suffix]
    except KeyError:
        raise InvalidInput(
            f"cannot write a picture to {path}: name it .png, .jpg or .webp "
            f"(got {suffix or 'no suffix'})"
        ) from None


def save_picture(img: Image.Image, path: str | Path) -> Path:
    """Write ``img`` to ``path`` in the format of its suffix (JPEG / WebP at quality 92)."""
    path = Path(path)
    fmt = picture_format(path)
    options = {"quality": 92} if fmt in ("JPEG", "WEBP") else {"optimize": True}
    try:
        img.convert("RGB").save(path, format=fmt, **options)
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from None
    return path

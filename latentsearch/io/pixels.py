"""Pixels: values brought to uint8, colour modes made gray or rgb, and images fitted to a square.

One set of rules for image files (``io.images.read_image_file``, folders) and for arrays
(``conform_images``), so an image gives the same pixels whichever way it arrives:

* gray is the ITU-R 601 luma, ``(19595 R + 38470 G + 7471 B + 2**15) >> 16``, which is
  exactly what Pillow's ``convert("L")`` computes (the weights 0.299 / 0.587 / 0.114; before
  Pillow the engine used TensorFlow's 0.2989 / 0.5870 / 0.1140: at most 1 level apart);
* transparency is composited on white, as an image viewer shows it (a transparent PNG of a
  black digit becomes a black digit on white);
* 16-bit samples keep their high byte (``>> 8``, as TensorFlow's decoder did);
* a non-square image becomes ``size`` x ``size`` by ``fit``: ``crop`` (centre crop to a square,
  then resize: the default of new collections), ``pad`` (resize to fit inside, black bars) or
  ``stretch`` (resize both sides: what collections built before ``fit`` existed do);
* resizing is Pillow's ``BILINEAR`` (a triangle filter widened when shrinking, so it
  antialiases, as TensorFlow's ``resize(antialias=True)`` did), with ``reducing_gap`` 3.0.
  The rounding differs from TensorFlow's: vectors of resized images move slightly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from latentsearch.errors import DimensionMismatch, InvalidInput

__all__ = [
    "GRAY_WEIGHTS",
    "FIT_MODES",
    "DEFAULT_FIT",
    "LEGACY_FIT",
    "RESAMPLE",
    "REDUCING_GAP",
    "to_uint8",
    "convert_channels",
    "gray_of",
    "flatten_alpha",
    "to_gray_or_rgb",
    "check_fit",
    "fit_image",
    "fit_array",
]

#: rgb -> gray weights (ITU-R 601 luma), as 16-bit fixed point: the same integers as Pillow
GRAY_WEIGHTS = (19595, 38470, 7471)
#: how a non-square image becomes square
FIT_MODES = ("crop", "pad", "stretch")
#: the fit of new collections
DEFAULT_FIT = "crop"
#: the fit of configs written before ``fit`` was recorded (they were resized both ways)
LEGACY_FIT = "stretch"
#: the resampling filter, by the name recorded in encoder configs
RESAMPLE = "bilinear"
_RESAMPLERS = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
#: shrink by whole factors (box filter) first while the image is over 3x the target: much
#: faster on large photos, visually the same as a full filter
REDUCING_GAP = 3.0


def to_uint8(arr: Any, what: str = "images") -> np.ndarray:
    """Pixel values as uint8: uint8 as is; floats in [0, 1] are scaled by 255; other
    numbers must lie in 0..255. NaN/inf and out-of-range values are refused."""
    try:
        arr = np.asarray(arr)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} must be a numeric array: {exc}") from None
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InvalidInput(f"{what} must be numeric pixel values, got dtype {arr.dtype}")
    if arr.size == 0:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InvalidInput(f"{what} contain NaN or inf")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 255:
            raise InvalidInput(
                f"{what} values must lie in [0, 1] or 0..255, found {lo:g}..{hi:g}"
            )
        scale = 255.0 if hi <= 1.0 else 1.0
        return np.clip(np.rint(arr.astype(np.float32) * scale), 0, 255).astype(np.uint8)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > 255:
        raise InvalidInput(f"{what} values must lie in 0..255, found {lo}..{hi}")
    return arr.astype(np.uint8)


def gray_of(rgb: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) -> uint8 (...): the ITU-R 601 luma, bit for bit Pillow's ``convert("L")``."""
    x = rgb.astype(np.uint32)
    r, g, b = GRAY_WEIGHTS
    return ((x[..., 0] * r + x[..., 1] * g + x[..., 2] * b + 0x8000) >> 16).astype(np.uint8)


def _composite_on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 colour (..., C) over white by uint8 alpha (..., 1), as Pillow's alpha_composite."""
    a = alpha.astype(np.uint32)
    return ((color.astype(np.uint32) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def convert_channels(batch: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (N, H, W, C) with C in 1..4 to ``channels`` (1 gray or 3 rgb); alpha (C = 2 or 4)
    is composited on white."""
    c = batch.shape[-1]
    if c == channels:
        return batch
    if c in (2, 4):  # gray + alpha, rgba
        batch, c = _composite_on_white(batch[..., :-1], batch[..., -1:]), c - 1
    if c == channels:
        return batch
    if c == 1 and channels == 3:
        return np.repeat(batch, 3, axis=-1)
    if c == 3 and channels == 1:
        return gray_of(batch)[..., None]
    raise DimensionMismatch(
        f"images have {batch.shape[-1]} channels; only 1 (gray), 2, 3 (rgb) or 4 (rgba) "
        f"can be converted to {channels}"
    )


# --------------------------------------------------------------------------- Pillow images


def flatten_alpha(img: Image.Image) -> Image.Image:
    """An image with transparency (LA, RGBA, PA, a palette or gray with a transparent colour)
    composited on white: mode L or RGB. Others are returned as they are."""
    transparent = "transparency" in img.info
    if img.mode in ("PA", "RGBa", "RGBA") or (img.mode in ("P", "RGB") and transparent):
        out = "RGB"
    elif img.mode in ("LA", "La") or (img.mode == "L" and transparent):
        out = "L"
    else:
        return img
    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, img.convert("RGBA")).convert(out)


def _deep_to_l(img: Image.Image, what: str) -> Image.Image:
    """16- or 32-bit integer gray (I;16*, I) keeps its high byte; float gray (F) follows
    :func:`to_uint8`."""
    arr = np.asarray(img)
    if img.mode == "F":
        return Image.fromarray(to_uint8(arr, what))
    high = np.right_shift(np.clip(arr.astype(np.int64), 0, 65535), 8).astype(np.uint8)
    return Image.fromarray(high)


def to_gray_or_rgb(img: Image.Image, channels: int, what: str = "image") -> Image.Image:
    """Any Pillow image (CMYK, YCbCr, palette, 1-bit, 16-bit, float, with alpha...) as mode L
    (``channels`` 1) or RGB (3), by the rules in the module docstring."""
    if img.mode.startswith("I") or img.mode == "F":
        img = _deep_to_l(img, what)
    img = flatten_alpha(img)
    want = "L" if channels == 1 else "RGB"
    if img.mode == want:
        return img
    if want == "L" and img.mode not in ("1", "L"):
        img = img.convert("RGB")  # CMYK, YCbCr, palette... via RGB, then the luma
    return img.convert(want)


def _resampler(resample: str) -> Image.Resampling:
    try:
        return _RESAMPLERS[resample]
    except KeyError:
        raise InvalidInput(
            f"resample must be one of {', '.join(_RESAMPLERS)}, got {resample!r}"
        ) from None


def check_fit(fit: str) -> str:
    """``fit`` itself when it is one of :data:`FIT_MODES`; InvalidInput otherwise."""
    if fit not in FIT_MODES:
        raise InvalidInput(f"fit must be one of {', '.join(FIT_MODES)}, got {fit!r}")
    return fit


def fit_image(img: Image.Image, size: int, fit: str = DEFAULT_FIT,
              resample: str = RESAMPLE) -> Image.Image:
    """``img`` (mode L or RGB) as ``size`` x ``size`` by ``fit``: crop, pad or stretch."""
    check_fit(fit)
    w, h = img.size
    if (w, h) == (size, size):
        return img
    method = _resampler(resample)
    if fit == "stretch" or w == h:
        return img.resize((size, size), method, reducing_gap=REDUCING_GAP)
    if fit == "crop":
        side = min(w, h)
        left, top = (w - side) / 2, (h - side) / 2
        return img.resize((size, size), method, box=(left, top, left + side, top + side),
                          reducing_gap=REDUCING_GAP)
    scale = size / max(w, h)  # pad: the long side fills the square, black bars beside
    inner = (max(1, round(w * scale)), max(1, round(h * scale)))
    canvas = Image.new(img.mode, (size, size), 0)
    canvas.paste(img.resize(inner, method, reducing_gap=REDUCING_GAP),
                 ((size - inner[0]) // 2, (size - inner[1]) // 2))
    return canvas


def fit_array(img: np.ndarray, size: int, fit: str = DEFAULT_FIT,
              resample: str = RESAMPLE) -> np.ndarray:
    """uint8 (H, W, 1 or 3) as uint8 (size, size, C) by ``fit`` (:func:`fit_image`)."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    gray = img.shape[-1] == 1
    out = np.asarray(fit_image(Image.fromarray(img[..., 0] if gray else img), size, fit, resample))
    return out[..., None] if gray else out

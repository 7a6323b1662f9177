"""Pixel arrays: values brought to uint8, and channels converted between gray and rgb.

Shared by image reading (``io.images``), the PNG writer (``io.png``) and the pictures
(``report.pictures``); numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from latentsearch.errors import DimensionMismatch, InvalidInput

__all__ = ["GRAY_WEIGHTS", "to_uint8", "convert_channels"]

#: rgb -> gray weights, as tf.image.rgb_to_grayscale
GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)


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



def convert_channels(batch: np.ndarray, channels: int) -> np.ndarray:
    """(N, H, W, C) with C in 1..4 to ``channels`` (1 gray or 3 rgb); alpha is dropped."""
    c = batch.shape[-1]
    if c == channels:
        return batch
    if c == 2:  # gray + alpha
        batch, c = batch[..., :1], 1
    elif c == 4:  # rgba
        batch, c = batch[..., :3], 3
    if c == channels:
        return batch
    if c == 1 and channels == 3:
        return np.repeat(batch, 3, axis=-1)
    if c == 3 and channels == 1:
        gray = batch.astype(np.float32) @ GRAY_WEIGHTS
        return np.clip(np.rint(gray), 0, 255).astype(np.uint8)[..., None]
    raise DimensionMismatch(
        f"images have {batch.shape[-1]} channels; only 1 (gray), 2, 3 (rgb) or 4 (rgba) "
        f"can be converted to {channels}"
    )

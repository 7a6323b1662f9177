"""The ``vectors`` encoder: for embeddings made elsewhere. It checks shape and finiteness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.errors import DimensionMismatch, InvalidInput
from latentsearch.encoders.base import Encoder

__all__ = ["VectorEncoder", "as_vectors"]


def as_vectors(items: Any, dim: int | None = None, *, first_row: int = 0) -> np.ndarray:
    """``items`` as C-contiguous float32 (n, dim); a single vector becomes one row.
    ``first_row``: the row number of ``items[0]`` in error messages (a batch of a file)."""
    try:
        arr = np.asarray(items, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"vectors must be numeric: {exc}") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise DimensionMismatch(f"vectors must be 2-D (n, dim), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise DimensionMismatch("vectors must have at least one dimension")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionMismatch(
            f"vectors have dimension {arr.shape[1]}, the collection has {dim}"
        )
    if not np.isfinite(arr).all():
        bad = first_row + int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise InvalidInput(f"vectors contain NaN or inf (first at row {bad})")
    return np.ascontiguousarray(arr)


class VectorEncoder(Encoder):
    """Identity encoder: the items already are vectors of a fixed dimension."""

    name = "vectors"
    modality = "vectors"

    def __init__(self, dim: int):
        self._dim = int(dim)

    @property
    def dim(self) -> int:
        return self._dim

    def config(self) -> dict[str, Any]:
        return {"dim": self._dim}

    def encode(self, items: Any) -> np.ndarray:
        return as_vectors(items, self._dim)

    def save(self, folder: Path) -> list[str]:
        return []

    @classmethod
    def load(cls, folder: Path, config: dict[str, Any]) -> "VectorEncoder":
        return cls(int(config["dim"]))

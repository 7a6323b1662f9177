"""The encoder seam: what the store needs from anything that turns items into vectors.

A collection keeps its encoder in ``encoder/`` and names it in the manifest as
``{"name": ..., "config": {...}}``. The store never looks inside: it calls
:meth:`Encoder.encode` to turn user items (images, strings, vectors) into float32 rows and
:meth:`Encoder.save` / :meth:`Encoder.load` to keep the encoder beside the vectors.
Training is the encoder's own business (:meth:`Encoder.fit`), called by the ``build_*``
functions. TensorFlow is imported only inside the modules of encoders that need it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

__all__ = ["Encoder"]


class Encoder(ABC):
    """Turns items of one modality into float32 vectors of a fixed dimension."""

    #: registry key, stored in the manifest (e.g. "conv", "dense", "text", "vectors")
    name: ClassVar[str]
    #: "image", "text" or "vectors": what ``encode`` accepts
    modality: ClassVar[str]

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of each vector ``encode`` returns."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-able settings and training figures; stored as manifest["encoder"]["config"]."""

    @abstractmethod
    def encode(self, items: Any) -> np.ndarray:
        """Return float32 (n, dim) for ``items``; raise InvalidInput/EncoderError if unusable."""

    @abstractmethod
    def save(self, folder: Path) -> list[str]:
        """Write the encoder's files into ``folder``; return their names (relative)."""

    @classmethod
    @abstractmethod
    def load(cls, folder: Path, config: dict[str, Any]) -> "Encoder":
        """Read back what :meth:`save` wrote. Must not run code from the files (safe_mode)."""

"""Encoder registry: names in the manifest map to encoder classes, imported lazily.

Names map to "module:Class" strings so that looking an encoder up imports only its own
module. No encoder needs TensorFlow to encode: the image and text encoders keep a numpy
copy of their inference pass beside model.keras, and import TensorFlow only to train.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from latentsearch.errors import EncoderError
from latentsearch.encoders.base import Encoder

__all__ = ["Encoder", "available", "get", "load"]

_REGISTRY: dict[str, str] = {
    "vectors": "latentsearch.encoders.vectors:VectorEncoder",
    "dense": "latentsearch.encoders.image.autoencoders:DenseAutoencoder",
    "conv": "latentsearch.encoders.image.autoencoders:ConvAutoencoder",
    "text": "latentsearch.encoders.text.encoder:TextEncoder",
}


def available() -> list[str]:
    """Names of every registered encoder."""
    return sorted(_REGISTRY)


def get(name: str) -> type[Encoder]:
    """The encoder class registered under ``name``."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise EncoderError(
            f"unknown encoder {name!r}; known: {', '.join(available())}"
        ) from None
    module_name, _, cls_name = target.partition(":")
    return getattr(importlib.import_module(module_name), cls_name)


def load(folder: Path, spec: dict[str, Any]) -> Encoder:
    """Load the encoder a manifest describes (``{"name", "config"}``) from ``folder``."""
    return get(spec["name"]).load(folder, spec.get("config", {}))

"""The image encoders (``dense``, ``conv``): Keras autoencoders, queried through numpy.

:mod:`.autoencoders` trains the two autoencoders and saves / loads their encoder half;
:mod:`.forward` is the numpy copy of the encoder's inference pass that queries run, so
that reading a collection and encoding a query never imports TensorFlow.
"""

from latentsearch.encoders.image.autoencoders import (
    ENCODE_BATCH,
    KERAS_MIN_BATCH,
    MODEL_FILE,
    NUMPY_BATCH,
    ConvAutoencoder,
    DenseAutoencoder,
)
from latentsearch.encoders.image.forward import (
    FORWARD_JSON,
    FORWARD_KINDS,
    FORWARD_NPZ,
    NumpyForward,
    UnsupportedForward,
    export_forward,
)

__all__ = [
    "ConvAutoencoder",
    "DenseAutoencoder",
    "ENCODE_BATCH",
    "FORWARD_JSON",
    "FORWARD_KINDS",
    "FORWARD_NPZ",
    "KERAS_MIN_BATCH",
    "MODEL_FILE",
    "NUMPY_BATCH",
    "NumpyForward",
    "UnsupportedForward",
    "export_forward",
]

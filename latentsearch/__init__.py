"""latentsearch: vector similarity search over latents learned from your own data.

Images become autoencoder latents, sentences become pooled trained word embeddings; the
vectors live in FAISS indexes beside their records, in a collection folder on disk.

    import latentsearch as ls
    col = ls.build_vectors(array, labels=labels, name="emb")
    col = ls.open("emb")
    hits = col.search(array[0], k=5)

TensorFlow is imported only when an encoder is trained or used. ``ls.open`` is the way to
open a collection, but it is left out of ``__all__`` so ``from latentsearch import *``
never shadows the builtin ``open``.
"""

import os as _os

# TensorFlow's C++ start-up chatter must never reach the user (set before any TF import).
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from latentsearch.version import __version__  # noqa: E402

from latentsearch.collection import Collection, list_collections  # noqa: E402
from latentsearch.collection import open_collection as open  # noqa: E402,A001
from latentsearch import errors as _errors  # noqa: E402
from latentsearch.errors import *  # noqa: E402,F403  (the exception tree; see _errors' docstring)
from latentsearch.report.evaluate import Report, evaluate  # noqa: E402
from latentsearch.types import Hit, Record  # noqa: E402
from latentsearch.pipelines import build_images, build_text, build_vectors  # noqa: E402

__all__ = [
    "__version__",
    "Collection",
    "Hit",
    "Record",
    "build_vectors",
    "build_images",
    "build_text",
    "list_collections",
    "evaluate",
    "Report",
    *_errors.__all__,
]

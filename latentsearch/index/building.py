"""Making and changing FAISS indexes: build (train and fill), add, remove, copy.

Results carry the collection's stable int64 ids whatever the index type: IVF indexes store
them natively, every other index is wrapped in ``IndexIDMap`` (see :mod:`backends`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from latentsearch.errors import IndexSpecError
from latentsearch.index.backends import backend_of
from latentsearch.index.faiss_ops import faiss_metric
from latentsearch.index.specs import min_train_size, train_size
from latentsearch.progress import bar

__all__ = ["build", "add", "try_remove", "copy", "Fill"]

#: fills a trained index: ``fill(index, vectors, ids, skip)`` does what :func:`add` does,
#: elsewhere (``latentsearch.scale.build`` fills the lists of partitions on a Ray cluster)
#: and returns the filled index, which may be a new object
Fill = Callable[..., object]


def build(factory: str, dim: int, metric: str, vectors: np.ndarray, ids: np.ndarray,
          *, skip: np.ndarray | None = None, fill: Fill | None = None):
    """A trained index for ``factory`` holding ``vectors`` under ``ids``, less the rows
    ``skip`` (held out for tuning; the caller adds them after). Training is done here, on
    a seeded sample; ``fill`` (None: :func:`add`, here) puts every vector in."""
    import faiss

    try:
        raw = faiss.index_factory(dim, factory, faiss_metric(metric))
    except RuntimeError as exc:
        raise IndexSpecError(f"FAISS cannot build index {factory!r}: {_first_line(exc)}") from None
    if backend_of(raw).keeps_ids:
        index = raw
    else:
        index = faiss.IndexIDMap(raw)
        index.own_fields = True
        raw.this.disown()  # the IDMap owns it now
    if not index.is_trained:
        if len(vectors) < max(1, min_train_size(factory)):
            raise IndexSpecError(
                f"index {factory!r} needs at least {min_train_size(factory)} vectors to train, "
                f"got {len(vectors)}"
            )
        try:
            index.train(_train_sample(vectors, train_size(factory, len(vectors))))
        except RuntimeError as exc:
            raise IndexSpecError(f"FAISS cannot train {factory!r}: {_first_line(exc)}") from None
    if fill is not None:
        return fill(index, vectors, ids, skip)
    add(index, vectors, ids, skip=skip)
    return index


def _train_sample(vectors: np.ndarray, limit: int) -> np.ndarray:
    if len(vectors) <= limit:
        return np.ascontiguousarray(vectors)
    rows = np.sort(np.random.default_rng(0).choice(len(vectors), limit, replace=False))
    return np.ascontiguousarray(vectors[rows])


def add(index, vectors: np.ndarray, ids: np.ndarray, batch: int = 100_000,
        *, skip: np.ndarray | None = None) -> None:
    """Add in batches (vectors may be memory-mapped), leaving out the rows ``skip``."""
    starts = range(0, len(vectors), batch)
    for start in bar(starts, desc="adding to the index", unit="batch", quiet=len(starts) < 3):
        v = np.asarray(vectors[start : start + batch], dtype=np.float32)
        i = np.asarray(ids[start : start + batch], dtype=np.int64)
        if skip is not None and len(skip):
            keep = ~np.isin(np.arange(start, start + len(v)), skip)
            v, i = v[keep], i[keep]
        index.add_with_ids(np.ascontiguousarray(v), np.ascontiguousarray(i))


def try_remove(index, ids: np.ndarray) -> bool:
    """Remove ``ids`` in place; False where the index type cannot (then rebuild it)."""
    import faiss

    try:
        index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64)))
    except RuntimeError:
        return False
    return True


def copy(index):
    """An independent deep copy of ``index``: a writer changes the copy while readers go on
    searching the original.

    ``faiss.clone_index`` copies every kind we build (IDMap over Flat or HNSW, IVF Flat,
    IVF-PQ, fast-scan) in memory, with its search parameters and IVF-PQ's precomputed table
    as they are (absent when read with ``IO_FLAG_SKIP_PRECOMPUTE_TABLE``). Kinds it cannot
    clone go through FAISS's own serialisation, read back the way the collection reads
    indexes (without IVF-PQ's precomputed table).
    """
    import faiss

    try:
        return faiss.clone_index(index)
    except RuntimeError:  # "clone not supported for this type of Index"
        pass
    return faiss.deserialize_index(faiss.serialize_index(index), faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    for line in text:
        if "Error" in line and ":" in line:
            return line.split(":", 1)[-1].strip()[:200]
    return (text[-1] if text else type(exc).__name__)[:200]

"""Searching an index: filtered by id selectors, with per-call parameters, re-ranked exactly.

This is the hot path of a single query (tens of microseconds of Python on top of FAISS):
one backend lookup at most, and nothing built that the call does not need.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from latentsearch.index.backends import backend_of
from latentsearch.index.exact import VectorsOf, rerank_exact
from latentsearch.index.faiss_ops import threads_for

__all__ = ["search", "distances_per_query"]


def search(
    index,
    queries: np.ndarray,
    k: int,
    params: dict[str, Any],
    *,
    vectors_of: VectorsOf | None = None,
    metric: str = "l2",
    allowed: np.ndarray | None = None,
    excluded: np.ndarray | None = None,
    typed: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Search ``index``; returns raw FAISS scores and ids (-1 where fewer than k exist).

    The default parameters must have been set on ``index`` with :func:`apply`; with
    ``typed`` (another point of the tuned curve), ``params`` go to FAISS with this call only,
    so threads searching with other parameters do not disturb each other. ``params`` also
    carries the re-rank depth and is needed for filtered searches (the selector rides on
    typed parameters).
    ``allowed`` restricts the search to those ids through a FAISS id selector, ``excluded``
    (removed ids the index still holds) keeps those ids out the same way. With a
    ``rerank`` parameter (lossy indexes), ``rerank * k`` candidates are fetched and re-scored
    exactly with ``vectors_of(ids)`` (the stored vectors).
    """
    rerank = int(params.get("rerank", 0)) if vectors_of is not None else 0
    fetch = k * max(rerank, 1)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    with threads_for(len(queries)):
        if allowed is None and (excluded is None or not len(excluded)):
            if typed:
                D, I = index.search(queries, fetch,
                                    params=backend_of(index).search_params(params, None))
            else:
                D, I = index.search(queries, fetch)  # efSearch / nprobe were set by apply()
        else:
            import faiss

            chosen = allowed if allowed is not None else excluded
            batch = faiss.IDSelectorBatch(np.ascontiguousarray(chosen, dtype=np.int64))
            selector = batch if allowed is not None else faiss.IDSelectorNot(batch)
            D, I = index.search(queries, fetch,
                                params=backend_of(index).search_params(params, selector))
            del batch  # kept alive until here: the selectors hold raw pointers
    if rerank:
        D, I = rerank_exact(queries, I, k, vectors_of, metric)
    return D, I


def distances_per_query(index, queries: np.ndarray, params: dict[str, Any], k: int) -> float:
    """Distances and codes FAISS computes per query at ``params`` (its own counters), plus
    the coarse quantizer's nlist for IVF: the work a search does, whatever the index."""
    import faiss

    faiss.cvar.indexIVF_stats.reset()
    faiss.cvar.hnsw_stats.reset()
    search(index, queries, k, params, typed=True)
    ndis = faiss.cvar.indexIVF_stats.ndis + faiss.cvar.hnsw_stats.ndis
    return float(ndis / len(queries) + backend_of(index).coarse_distances())

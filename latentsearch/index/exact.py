"""Exact scores from the stored vectors: brute-force search, re-ranking, the top-k merge,
and recall against the exact answer.

Scores are FAISS's: squared L2 (lower is better) or inner product for cosine (higher is
better); id -1 marks "no result" and is always scored worst.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from latentsearch.index.faiss_ops import SMALL_BATCH, faiss_metric, threads_for

__all__ = ["VectorsOf", "exact_search", "exact_scores", "best_of", "rerank_exact", "merge_best",
           "recall_at", "drop_own"]

VectorsOf = Callable[[np.ndarray], np.ndarray]  # ids -> their stored vectors, in order


def _worst(metric: str) -> float:
    return np.inf if metric == "l2" else -np.inf


def exact_search(
    vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int, metric: str,
    chunk: int = 262_144,
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force search over stored vectors: the reference that recall is measured against."""
    import faiss

    k_eff = min(k, len(vectors))
    D = np.full((len(queries), k), _worst(metric), dtype=np.float32)
    I = np.full((len(queries), k), -1, dtype=np.int64)
    if k_eff == 0:
        return D, I
    fm = faiss_metric(metric)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    parts_d, parts_i = [], []
    with threads_for(len(queries)):
        for start in range(0, len(vectors), chunk):  # bounded memory over memory-mapped vectors
            block = np.ascontiguousarray(vectors[start : start + chunk], dtype=np.float32)
            d, rows = faiss.knn(queries, block, min(k_eff, len(block)), metric=fm)
            parts_d.append(d)
            parts_i.append(rows + start)
    d, rows = merge_best(parts_d, parts_i, k_eff, metric)
    D[:, :k_eff] = d
    I[:, :k_eff] = np.asarray(ids)[rows]
    return D, I


def exact_scores(queries: np.ndarray, cand: np.ndarray, vectors_of: VectorsOf,
                 metric: str) -> np.ndarray:
    """Exact FAISS-style scores of candidate ids (-1 = none, scored worst) for each query."""
    worst = _worst(metric)
    valid = cand >= 0
    every = bool(valid.all())
    if not every and not valid.any():
        return np.full(cand.shape, worst, np.float32)
    safe = cand if every else np.where(valid, cand, cand[valid][0])  # masked out below
    vecs = np.asarray(vectors_of(safe.reshape(-1)), dtype=np.float32).reshape(*cand.shape, -1)
    small = len(queries) < SMALL_BATCH  # numpy's per-call costs dominate: fewest calls
    if metric == "l2":
        vecs -= queries[:, None, :]
        scores = (vecs * vecs).sum(-1) if small else np.einsum("qmd,qmd->qm", vecs, vecs)
    else:
        scores = np.matmul(vecs, queries[:, :, None])[..., 0]
    if not every:
        scores[~valid] = worst
    return scores


def best_of(scores: np.ndarray, cand: np.ndarray, k: int,
            metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` columns of ``scores`` per row, best first, with their ids."""
    key = scores if metric == "l2" else -scores
    rows = np.arange(len(key))[:, None]
    if k < key.shape[1] and key.shape[1] > 64:  # the best k unordered, then ordered
        part = np.argpartition(key, k - 1, axis=1)[:, :k]
        order = part[rows, np.argsort(key[rows, part], axis=1, kind="stable")]
    else:
        order = np.argsort(key, axis=1, kind="stable")[:, :k]
    out_i = cand[rows, order]
    out_d = scores[rows, order].astype(np.float32)
    out_i[~np.isfinite(out_d)] = -1
    return out_d, out_i


def rerank_exact(queries: np.ndarray, cand: np.ndarray, k: int, vectors_of: VectorsOf,
                 metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores of the candidate ids (-1 = none), best k first, for all queries at once."""
    if not (cand >= 0).any():
        return np.full((len(queries), k), _worst(metric), np.float32), np.full((len(queries), k), -1)
    return best_of(exact_scores(queries, cand, vectors_of, metric), cand, k, metric)


def merge_best(D_parts: list[np.ndarray], I_parts: list[np.ndarray], k: int,
               metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of several per-query result blocks (FAISS scores, ids; -1 = none),
    best first; ties keep the earlier block's order. The one top-k merge: chunks of an exact
    search, the main index with the delta segments."""
    D = np.concatenate(D_parts, axis=1) if len(D_parts) > 1 else D_parts[0]
    I = np.concatenate(I_parts, axis=1) if len(I_parts) > 1 else I_parts[0]
    worst = np.float32(_worst(metric))
    D = np.where(I < 0, worst, D)
    order = np.argsort(D if metric == "l2" else -D, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true neighbours (ids >= 0) that ``found`` contains, over all queries."""
    found, truth = np.asarray(found), np.asarray(truth)
    valid = truth >= 0
    total = int(valid.sum())
    if not total:
        return 1.0
    hits = 0
    for start in range(0, len(truth), 4096):  # bounded memory: q x found x truth booleans
        f, t = found[start : start + 4096], truth[start : start + 4096]
        seen = (f[:, :, None] == t[:, None, :]).any(axis=1)
        hits += int((seen & valid[start : start + 4096]).sum())
    return hits / total


def drop_own(found: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """Each row's ids without the query's own id ``own[q]``, cut to ``k`` (-1 padded)."""
    out = np.full((len(found), k), -1, dtype=np.int64)
    for q, row in enumerate(found):
        row = row[row != own[q]][:k]
        out[q, : len(row)] = row
    return out

"""Searching one snapshot: the main index, the exact search over the deltas, one merge.

Every function here reads a :class:`~latentsearch.collection.snapshot.Snapshot` and nothing
else, so a search started on one generation finishes on it whatever writers do meanwhile.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from latentsearch import index as _index
from latentsearch.collection.snapshot import Snapshot
from latentsearch.errors import InvalidInput
from latentsearch.index import tune as _tuning
from latentsearch.types import Hit

__all__ = ["nearest_arrays", "search_vectors", "check_recall", "search_parameters", "distances"]

_FEW_ROWS = 32  # queries compacted in Python rather than numpy (see _compact)


def nearest_arrays(
    snap: Snapshot, vecs: np.ndarray, k: int, where: dict[str, Any] | None = None,
    exclude: Sequence[int] | np.ndarray | None = None, *, recall: float | None = None,
    exact: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest live items to each row of ``vecs`` (search-ready: normalised for
    cosine), matching ``where``, without ``exclude[q]`` for query q, as two (q, k) arrays:
    the reported distances (float64, as Hits carry them) and the ids (int64). Rows with
    fewer than ``k`` qualifying items are padded with inf / -1. No records are read, so
    bulk work (``knn``) pays only for the search."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise InvalidInput(f"k must be a positive integer, got {k!r}")
    k = int(k)
    q = len(vecs)
    out_d = np.full((q, k), np.inf, dtype=np.float64)
    out_i = np.full((q, k), -1, dtype=np.int64)
    params, typed = search_parameters(snap, recall)
    allowed = snap.allowed(where)
    pool = snap.count if allowed is None else len(allowed)
    k_eff = min(k + (1 if exclude is not None else 0), pool)
    if k_eff == 0 or q == 0:
        return out_d, out_i
    D, I = _search_main(snap, vecs, k_eff, allowed, params, typed, exact)
    if len(snap.delta_ids):
        D, I = _with_deltas(snap, vecs, D, I, k_eff, allowed)
    _compact(distances(D, snap.metric), I, exclude, out_d, out_i)
    return out_d, out_i


def search_vectors(
    snap: Snapshot, vecs: np.ndarray, k: int, where: dict[str, Any] | None,
    exclude: Sequence[int] | None = None, *, recall: float | None = None, exact: bool = False,
) -> list[list[Hit]]:
    """:func:`nearest_arrays` as Hits with their records (the missing ones left out)."""
    D, I = nearest_arrays(snap, vecs, k, where, exclude, recall=recall, exact=exact)
    id_rows = I.tolist()
    dist_rows = D.tolist()
    records = snap.records(sorted({i for row in id_rows for i in row if i >= 0}))
    return [[Hit(i, d, *records[i]) for d, i in zip(dist_row, id_row) if i >= 0]
            for dist_row, id_row in zip(dist_rows, id_rows)]


def _compact(dist: np.ndarray, I: np.ndarray, exclude: Any, out_d: np.ndarray,
             out_i: np.ndarray) -> None:
    """Each row's found ids (not -1, not ``exclude[q]``) in order, cut to ``out``'s width,
    written into ``out_d`` / ``out_i`` (already padded). Few rows go through Python lists
    (a single search's hot path: numpy's per-call costs would dominate), many through numpy."""
    k = out_i.shape[1]
    if len(I) <= _FEW_ROWS:
        for q, (dist_row, id_row) in enumerate(zip(dist.tolist(), I.tolist())):
            skip = -1 if exclude is None else int(exclude[q])
            found = [(d, i) for d, i in zip(dist_row, id_row) if i >= 0 and i != skip][:k]
            if found:
                out_d[q, : len(found)], out_i[q, : len(found)] = zip(*found)
        return
    keep = I >= 0
    if exclude is not None:
        keep &= I != np.asarray(exclude, dtype=np.int64).reshape(-1, 1)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept columns first, in order
    kept = np.take_along_axis(keep, order, 1)
    width = order.shape[1]
    out_i[:, :width] = np.where(kept, np.take_along_axis(I, order, 1), -1)
    out_d[:, :width] = np.where(kept, np.take_along_axis(dist, order, 1), np.inf)


def check_recall(recall: Any) -> float:
    if isinstance(recall, bool) or not isinstance(recall, (int, float, np.floating)) \
            or not 0.0 < float(recall) <= 1.0:
        raise InvalidInput(f"recall must be a number in (0, 1], got {recall!r}")
    return float(recall)


def search_parameters(snap: Snapshot, recall: float | None) -> tuple[dict[str, Any], bool]:
    """Search parameters for a query-time ``recall`` (a point of the tuned curve), and
    whether they differ from the defaults applied to the index when it was loaded."""
    entry = snap.manifest["index"]
    params = entry.get("params", {})
    if recall is None:
        return params, False
    recall = check_recall(recall)
    curve = entry.get("curve")
    if not curve:
        if _index.knob(snap.main.index)[0] is None and "rerank" not in params:
            return params, False  # exact index: every recall is met
        raise InvalidInput(
            f"collection {snap.folder.name} has no tuned recall curve (built before recall= "
            "existed); rebuild it to choose a recall at query time")
    return _tuning.pick(curve, recall)["params"], True


def _search_main(snap: Snapshot, vecs: np.ndarray, k: int, allowed: np.ndarray | None,
                 params: dict[str, Any], typed: bool, exact: bool):
    """Raw scores and ids from the main index (at most ``k`` per query)."""
    if allowed is not None and len(snap.delta_ids):
        allowed = allowed[allowed < snap.delta_ids[0]]
    k = min(k, len(snap.live_main) if allowed is None else len(allowed))
    if k == 0:
        return np.empty((len(vecs), 0), np.float32), np.empty((len(vecs), 0), np.int64)
    if exact:
        return _exact_main(snap, vecs, k, allowed)
    D, I = _index.search(
        snap.main.index, vecs, k, params, vectors_of=snap.main.vectors_of, metric=snap.metric,
        allowed=allowed, excluded=snap.removed if allowed is None else None, typed=typed,
    )
    short = (I < 0).any(axis=1)
    if short.any():  # an approximate index under a filter may return too few: go exact
        D[short], I[short] = _exact_main(snap, vecs[short], k, allowed)
    return D, I


def _exact_main(snap: Snapshot, vecs: np.ndarray, k: int, allowed: np.ndarray | None):
    """Brute force over the main segment's live vectors (or the ``allowed`` ids)."""
    if allowed is not None:
        return _index.exact_search(snap.main.vectors[snap.rows(allowed)], allowed, vecs, k,
                                   snap.metric)
    # over the memory-mapped file in chunks, then without the removed ids
    wide = k + len(snap.removed)
    D, I = _index.exact_search(snap.main.vectors, snap.main.ids, vecs, wide, snap.metric)
    if len(snap.removed):
        order = np.argsort(np.isin(I, snap.removed), axis=1, kind="stable")
        D, I = np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)
    return D[:, :k], I[:, :k]


def _with_deltas(snap: Snapshot, vecs, D, I, k: int, allowed: np.ndarray | None):
    """The main results merged with an exact search over the delta segments (best ``k``)."""
    dvecs, dids = snap.delta_vectors, snap.delta_ids
    if allowed is not None:
        keep = np.isin(dids, allowed)
        dvecs, dids = dvecs[keep], dids[keep]
    if not len(dids):
        return D, I
    D2, I2 = _index.exact_search(dvecs, dids, vecs, min(k, len(dids)), snap.metric)
    return _index.merge_best([D, D2], [I, I2], k, snap.metric)


def distances(raw: np.ndarray, metric: str) -> np.ndarray:
    """FAISS scores as reported distances: Euclidean for l2, 1 - cosine for cosine."""
    if metric == "l2":
        return np.sqrt(np.maximum(raw, 0.0, dtype=np.float64))
    return np.maximum(1.0 - raw.astype(np.float64), 0.0)

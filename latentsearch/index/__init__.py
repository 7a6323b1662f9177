"""The index layer: index specs, building and filtered search over FAISS.

Results carry the collection's stable int64 ids whatever the index type: IVF indexes store
them natively, every other index is wrapped in ``IndexIDMap``. Specs:

==========  ==============================================================================
``flat``    exact search (``Flat``)
``hnsw``    graph index ``HNSW32``; efSearch tuned
``ivf``     ``IVF{nlist},Flat`` with nlist ~ 4*sqrt(n); nprobe tuned
``ivffs``   ``IVF{nlist},PQ{dim}x4fs`` (FAISS fast-scan: 4-bit codes scanned with SIMD) with
            nlist ~ sqrt(n), and an exact re-rank of ``rerank x k`` candidates from the
            stored vectors; nprobe and rerank tuned
``ivfpq``   ``IVF{nlist},PQ{dim/2}np`` and the same exact re-rank; nprobe and rerank tuned
``auto``    chosen by measurement at build time (see ``_tuning``): flat below 10,000
            vectors, else the fastest of ivf / ivffs / hnsw at the target recall that fits
            the memory budget (``$LATENTSEARCH_MEMORY_BUDGET`` in bytes, default 4 GiB)
other       any FAISS ``index_factory`` string, e.g. ``IVF256,SQ8`` or ``HNSW16``
==========  ==============================================================================

Tuning (``_tuning``) measures recall on held-out queries and stores a recall curve in the
manifest. An approximate spec asked for on too few vectors to train (e.g. IVF on 50
vectors) is built as ``Flat`` and rebuilt with the asked spec once the collection is large
enough.

Metrics: ``l2`` (FAISS squared L2; reported distances are Euclidean) and ``cosine`` (vectors
are unit-normalised on both sides and searched by inner product; distance = 1 - cosine).
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentsearch.errors import IndexSpecError, InvalidInput

__all__ = ["METRICS", "IndexPlan", "plan", "build", "apply", "search", "exact_search",
           "knob", "rerank_exact", "merge_best", "recall_at", "drop_own"]

METRICS = ("l2", "cosine")
AUTO_FLAT_BELOW = 10_000
DEFAULT_BUDGET = 4 << 30
EF_STEPS = (10, 12, 16, 20, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 256, 320, 384,
            512, 768, 1024)
NPROBE_STEPS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96,
                112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 1024)
# k-means trains on up to this many points per list (FAISS's own cap is 256): fewer gave
# visibly unbalanced lists (imbalance 1.51 at 50 per list vs 1.35 at 100, 1M x 32).
TRAIN_PER_LIST = 256
TRAIN_LIMIT = 262_144


def _faiss():
    import faiss  # imported here so `latentsearch --help` stays light

    return faiss


@dataclass
class IndexPlan:
    """What to build: the asked spec, the FAISS factory string, and search parameters."""

    spec: str
    factory: str
    params: dict[str, Any] = field(default_factory=dict)


def memory_budget() -> int:
    raw = os.environ.get("LATENTSEARCH_MEMORY_BUDGET")
    if not raw:
        return DEFAULT_BUDGET
    try:
        return int(float(raw))
    except ValueError:
        raise InvalidInput(f"LATENTSEARCH_MEMORY_BUDGET must be a number of bytes, got {raw!r}")


def _nlist(n: int, per_sqrt: float = 4.0) -> int:
    # 39 training points per centroid is FAISS's minimum
    return int(max(1, min(round(per_sqrt * np.sqrt(n)), n // 39)))


def fs_subquantizers(dim: int) -> int:
    """Fast-scan sub-quantizers: one per dimension up to 64 (4 bits each), an even count."""
    for m in (dim, dim // 2, dim // 4, dim // 8):
        if 2 <= m <= 64 and m % 2 == 0 and dim % m == 0:
            return m
    return 0


def _pq_m(dim: int) -> int:
    for m in (dim // 2, dim // 4, dim // 8, 1):
        if m >= 1 and dim % m == 0:
            return m
    return 1


def index_bytes(spec: str, n: int, dim: int) -> int:
    """Rough resident size of a spec's index (codes, ids, centroids, graph links)."""
    if spec == "ivf":
        return n * (4 * dim + 8) + _nlist(n) * 4 * dim
    if spec == "ivffs":
        return n * (fs_subquantizers(dim) // 2 + 8) + _nlist(n, 1.0) * 4 * dim
    if spec == "hnsw":
        return n * (4 * dim + 8 + 32 * 2 * 4 + 16)
    if spec == "ivfpq":
        return n * (_pq_m(dim) + 8) + _nlist(n) * 4 * dim
    return n * (4 * dim + 8)


def plan(spec: str, n: int, dim: int) -> IndexPlan:
    """Resolve ``spec`` for ``n`` vectors of ``dim`` into a factory string (without IDMap)."""
    spec = (spec or "auto").strip()
    name = spec.lower()
    if name == "auto":  # the real choice is measured by _tuning.choose; this is its default
        if n < AUTO_FLAT_BELOW:
            return IndexPlan(spec, "Flat")
        chosen = plan("ivffs" if fs_subquantizers(dim) else "ivf", n, dim)
        return IndexPlan(spec, chosen.factory, chosen.params)
    if name == "flat":
        return IndexPlan(spec, "Flat")
    if name == "hnsw":
        return IndexPlan(spec, "HNSW32")
    if name == "ivf":
        nl = _nlist(n)
        return IndexPlan(spec, f"IVF{nl},Flat" if n >= 39 else "Flat")
    if name == "ivffs":
        m = fs_subquantizers(dim)
        if not m:
            raise IndexSpecError(f"ivffs needs an even dimension with an even divisor <= 64, got {dim}")
        if n < 10_000:  # 16 centroids per sub-quantizer train well from a few thousand points
            return IndexPlan(spec, "Flat")
        return IndexPlan(spec, f"IVF{_nlist(n, 1.0)},PQ{m}x4fs", {"rerank": 4})
    if name == "ivfpq":
        # PQ needs 256 centroids per sub-quantizer: below ~10k vectors it trains badly.
        if n < 10_000:
            return IndexPlan(spec, "Flat")
        return IndexPlan(spec, f"IVF{_nlist(n)},PQ{_pq_m(dim)}np", {"rerank": 4})
    if "idmap" in name:
        raise IndexSpecError("index spec must not contain IDMap: ids are mapped by latentsearch")
    return IndexPlan(spec, spec, {"rerank": 1} if is_lossy(spec) else {})


def is_lossy(factory: str) -> bool:
    """Whether the index stores compressed codes, so its distances are approximations.

    Lossy indexes are searched with an exact re-rank from the stored vectors (``rerank``
    >= 1), so reported distances are always exact.
    """
    return re.search(r"PQ|SQ|LSH|RaBitQ|RQ|ITQ", factory) is not None


def min_train_size(factory: str) -> int:
    """Vectors needed before ``factory`` can be trained; 0 for indexes needing no training."""
    m = re.search(r"IVF(\d+)", factory)
    need = 39 * int(m.group(1)) if m else 0
    if re.search(r"PQ\d+", factory):
        need = max(need, 10_000)
    return need


def faiss_metric(metric: str) -> int:
    faiss = _faiss()
    if metric == "l2":
        return faiss.METRIC_L2
    if metric == "cosine":
        return faiss.METRIC_INNER_PRODUCT
    raise InvalidInput(f"unknown metric {metric!r}; use one of: {', '.join(METRICS)}")


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Unit-normalise rows; a zero row cannot be compared by cosine and is refused."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms == 0).any():
        row = int(np.flatnonzero(norms[:, 0] == 0)[0])
        raise InvalidInput(f"vector at row {row} is all zeros: it has no direction for cosine")
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


def build(factory: str, dim: int, metric: str, vectors: np.ndarray, ids: np.ndarray,
          *, skip: np.ndarray | None = None):
    """A trained index for ``factory`` holding ``vectors`` under ``ids``, less the rows
    ``skip`` (held out for tuning; the caller adds them after)."""
    faiss = _faiss()
    try:
        raw = faiss.index_factory(dim, factory, faiss_metric(metric))
    except RuntimeError as exc:
        raise IndexSpecError(f"FAISS cannot build index {factory!r}: {_first_line(exc)}") from None
    # IVF indexes keep ids themselves and renumber nothing on remove; wrapping them in
    # IDMap would break remove_ids (IDMap assumes the sub-index compacts like Flat does).
    if isinstance(faiss.downcast_index(raw), faiss.IndexIVF):
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
            index.train(_train_sample(vectors, _train_size(factory, len(vectors))))
        except RuntimeError as exc:
            raise IndexSpecError(f"FAISS cannot train {factory!r}: {_first_line(exc)}") from None
    add(index, vectors, ids, skip=skip)
    return index


def _train_size(factory: str, n: int) -> int:
    m = re.search(r"IVF(\d+)", factory)
    if not m:
        return min(n, TRAIN_LIMIT)
    lists = int(m.group(1))
    return min(n, max(min_train_size(factory), min(TRAIN_PER_LIST * lists, TRAIN_LIMIT)))


def imbalance(index) -> float | None:
    """FAISS's imbalance factor of an IVF index's lists (1.0 = all lists the same size)."""
    faiss = _faiss()
    inner = _inner(index)
    if not isinstance(inner, faiss.IndexIVF) or inner.ntotal == 0:
        return None
    return round(float(inner.invlists.imbalance_factor()), 3)


def _train_sample(vectors: np.ndarray, limit: int) -> np.ndarray:
    if len(vectors) <= limit:
        return np.ascontiguousarray(vectors)
    rows = np.sort(np.random.default_rng(0).choice(len(vectors), limit, replace=False))
    return np.ascontiguousarray(vectors[rows])


def add(index, vectors: np.ndarray, ids: np.ndarray, batch: int = 100_000,
        *, skip: np.ndarray | None = None) -> None:
    """Add in batches (vectors may be memory-mapped), leaving out the rows ``skip``."""
    for start in range(0, len(vectors), batch):
        v = np.asarray(vectors[start : start + batch], dtype=np.float32)
        i = np.asarray(ids[start : start + batch], dtype=np.int64)
        if skip is not None and len(skip):
            keep = ~np.isin(np.arange(start, start + len(v)), skip)
            v, i = v[keep], i[keep]
        index.add_with_ids(np.ascontiguousarray(v), np.ascontiguousarray(i))


def try_remove(index, ids: np.ndarray) -> bool:
    """Remove ``ids`` in place; False where the index type cannot (then rebuild it)."""
    faiss = _faiss()
    try:
        index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64)))
    except RuntimeError:
        return False
    return True


def _inner(index):
    """The index doing the work: under IDMap, or the index itself (IVF keeps its own ids)."""
    faiss = _faiss()
    index = faiss.downcast_index(index)
    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index


def apply(index, params: dict[str, Any]) -> None:
    """Set tuned search parameters (efSearch, nprobe) on a loaded index."""
    faiss = _faiss()
    inner = _inner(index)
    if "efSearch" in params and isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = int(params["efSearch"])
    if "nprobe" in params and isinstance(inner, faiss.IndexIVF):
        inner.nprobe = int(params["nprobe"])


def _search_params(index, params: dict[str, Any], selector):
    """Typed FAISS search parameters for the inner index, carrying ``selector``."""
    faiss = _faiss()
    inner = _inner(index)
    if isinstance(inner, faiss.IndexHNSW):
        p = faiss.SearchParametersHNSW()
        p.efSearch = int(params.get("efSearch", inner.hnsw.efSearch))
    elif isinstance(inner, faiss.IndexIVF):
        p = faiss.SearchParametersIVF()
        p.nprobe = int(params.get("nprobe", inner.nprobe))
    else:
        p = faiss.SearchParameters()
    if selector is not None:
        p.sel = selector
    return p


def search(
    index,
    queries: np.ndarray,
    k: int,
    params: dict[str, Any],
    *,
    vectors_of=None,
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
    with _threads_for(len(queries)):
        if allowed is None and (excluded is None or not len(excluded)):
            if typed:
                D, I = index.search(queries, fetch, params=_search_params(index, params, None))
            else:
                D, I = index.search(queries, fetch)  # efSearch / nprobe were set by apply()
        else:
            faiss = _faiss()
            chosen = allowed if allowed is not None else excluded
            batch = faiss.IDSelectorBatch(np.ascontiguousarray(chosen, dtype=np.int64))
            selector = batch if allowed is not None else faiss.IDSelectorNot(batch)
            D, I = index.search(queries, fetch, params=_search_params(index, params, selector))
            del batch  # kept alive until here: the selectors hold raw pointers
    if rerank:
        D, I = rerank_exact(queries, I, k, vectors_of, metric)
    return D, I


SMALL_BATCH = 16


@contextmanager
def _threads_for(n_queries: int):
    """One OpenMP thread for a few queries: FAISS parallelises over queries, and on a busy
    machine waking a thread team for one query cost 8 ms instead of 0.3 ms (benchmarks)."""
    if n_queries >= SMALL_BATCH:
        yield
        return
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def exact_scores(queries, cand, vectors_of, metric) -> np.ndarray:
    """Exact FAISS-style scores of candidate ids (-1 = none, scored worst) for each query."""
    worst = np.inf if metric == "l2" else -np.inf
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


def best_of(scores, cand, k, metric) -> tuple[np.ndarray, np.ndarray]:
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


def rerank_exact(queries, cand, k, vectors_of, metric):
    """Exact scores of the candidate ids (-1 = none), best k first, for all queries at once."""
    if not (cand >= 0).any():
        worst = np.inf if metric == "l2" else -np.inf
        return np.full((len(queries), k), worst, np.float32), np.full((len(queries), k), -1)
    return best_of(exact_scores(queries, cand, vectors_of, metric), cand, k, metric)


def distances_per_query(index, queries: np.ndarray, params: dict[str, Any], k: int) -> float:
    """Distances and codes FAISS computes per query at ``params`` (its own counters), plus
    the coarse quantizer's nlist for IVF: the work a search does, whatever the index."""
    faiss = _faiss()
    faiss.cvar.indexIVF_stats.reset()
    faiss.cvar.hnsw_stats.reset()
    search(index, queries, k, params, typed=True)
    ndis = faiss.cvar.indexIVF_stats.ndis + faiss.cvar.hnsw_stats.ndis
    inner = _inner(index)
    coarse = inner.nlist if isinstance(inner, faiss.IndexIVF) else 0
    return float(ndis / len(queries) + coarse)


def knob(index) -> tuple[str | None, list[int]]:
    """The search parameter a tuner sweeps for this index, and the values to try."""
    faiss = _faiss()
    inner = _inner(index)
    if isinstance(inner, faiss.IndexHNSW):
        return "efSearch", list(EF_STEPS)
    if isinstance(inner, faiss.IndexIVF):
        return "nprobe", [s for s in NPROBE_STEPS if s < inner.nlist] + [inner.nlist]
    return None, []


def exact_search(
    vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int, metric: str,
    chunk: int = 262_144,
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force search over stored vectors: the reference that recall is measured against."""
    faiss = _faiss()
    k_eff = min(k, len(vectors))
    D = np.full((len(queries), k), np.inf if metric == "l2" else -np.inf, dtype=np.float32)
    I = np.full((len(queries), k), -1, dtype=np.int64)
    if k_eff == 0:
        return D, I
    fm = faiss_metric(metric)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    parts_d, parts_i = [], []
    with _threads_for(len(queries)):
        for start in range(0, len(vectors), chunk):  # bounded memory over memory-mapped vectors
            block = np.ascontiguousarray(vectors[start : start + chunk], dtype=np.float32)
            d, rows = faiss.knn(queries, block, min(k_eff, len(block)), metric=fm)
            parts_d.append(d)
            parts_i.append(rows + start)
    d, rows = merge_best(parts_d, parts_i, k_eff, metric)
    D[:, :k_eff] = d
    I[:, :k_eff] = np.asarray(ids)[rows]
    return D, I


def merge_best(D_parts: list[np.ndarray], I_parts: list[np.ndarray], k: int,
               metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of several per-query result blocks (FAISS scores, ids; -1 = none),
    best first; ties keep the earlier block's order. The one top-k merge: chunks of an exact
    search, the main index with the delta segments."""
    D = np.concatenate(D_parts, axis=1) if len(D_parts) > 1 else D_parts[0]
    I = np.concatenate(I_parts, axis=1) if len(I_parts) > 1 else I_parts[0]
    worst = np.float32(np.inf if metric == "l2" else -np.inf)
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    for line in text:
        if "Error" in line and ":" in line:
            return line.split(":", 1)[-1].strip()[:200]
    return (text[-1] if text else type(exc).__name__)[:200]

"""The index layer: index specs, building, recall tuning and filtered search over FAISS.

Results carry the collection's stable int64 ids whatever the index type: IVF indexes store
them natively, every other index is wrapped in ``IndexIDMap``. Specs:

==========  ==============================================================================
``flat``    exact search (``Flat``)
``hnsw``    graph index ``HNSW32``; efSearch tuned
``ivf``     ``IVF{nlist},Flat`` with nlist ~ 4*sqrt(n); nprobe tuned
``ivfpq``   ``IVF{nlist},PQ{dim/2}np`` and an exact re-rank of ``rerank x k`` candidates from
            the stored vectors; nprobe and rerank tuned
``auto``    flat below 10,000 vectors, ivf while its estimated size fits the memory budget
            (``$LATENTSEARCH_MEMORY_BUDGET`` in bytes, default 4 GiB), ivfpq beyond. Chosen by
            measurement (benchmarks/RESULTS.md): on 32-d data at 100k and 1M, IVF,Flat with
            tuned nprobe gave higher recall at 1.3-3x the queries/s of HNSW32, builds ~8x
            faster, uses half the memory and removes in place (HNSW must be rebuilt).
other       any FAISS ``index_factory`` string, e.g. ``IVF256,SQ8`` or ``HNSW16``
==========  ==============================================================================

Tuning raises efSearch / nprobe (and the re-rank factor) until recall@10 against exact search,
on a seeded sample of the stored vectors used as queries, reaches 0.95; the values land in the
manifest. An approximate spec asked for on too few vectors to train (e.g. IVF on 50 vectors)
is built as ``Flat`` and rebuilt with the asked spec once the collection is large enough.

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

from ._errors import IndexSpecError, InvalidInput

__all__ = ["METRICS", "IndexPlan", "plan", "build", "apply", "tune", "search", "exact_search"]

METRICS = ("l2", "cosine")
# Every index must give recall@10 >= 0.95; tuning aims at 0.97 on its own sample, since
# recall on new queries came out up to ~0.015 lower than on the tuning sample.
TUNE_TARGET = 0.97
AUTO_FLAT_BELOW = 10_000
DEFAULT_BUDGET = 4 << 30
_EF_STEPS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)
_NPROBE_STEPS = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024)
_RERANK_STEPS = (1, 2, 4, 8, 16)


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


def _nlist(n: int) -> int:
    return int(max(1, min(round(4 * np.sqrt(n)), n // 39)))


def _pq_m(dim: int) -> int:
    for m in (dim // 2, dim // 4, dim // 8, 1):
        if m >= 1 and dim % m == 0:
            return m
    return 1


def ivf_bytes(n: int, dim: int) -> int:
    """Rough resident size of IVF,Flat: the vectors and their ids, plus the centroids."""
    return n * (4 * dim + 8) + _nlist(n) * 4 * dim


def plan(spec: str, n: int, dim: int) -> IndexPlan:
    """Resolve ``spec`` for ``n`` vectors of ``dim`` into a factory string (without IDMap)."""
    spec = (spec or "auto").strip()
    name = spec.lower()
    if name == "auto":
        if n < AUTO_FLAT_BELOW:
            return IndexPlan(spec, "Flat")
        chosen = plan("ivf" if ivf_bytes(n, dim) <= memory_budget() else "ivfpq", n, dim)
        return IndexPlan(spec, chosen.factory, chosen.params)
    if name == "flat":
        return IndexPlan(spec, "Flat")
    if name == "hnsw":
        return IndexPlan(spec, "HNSW32")
    if name == "ivf":
        nl = _nlist(n)
        return IndexPlan(spec, f"IVF{nl},Flat" if n >= 39 else "Flat")
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


def build(factory: str, dim: int, metric: str, vectors: np.ndarray, ids: np.ndarray):
    """A trained index for ``factory`` holding ``vectors`` under ``ids``."""
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
            index.train(_train_sample(vectors))
        except RuntimeError as exc:
            raise IndexSpecError(f"FAISS cannot train {factory!r}: {_first_line(exc)}") from None
    add(index, vectors, ids)
    return index


def _train_sample(vectors: np.ndarray, limit: int = 200_000) -> np.ndarray:
    if len(vectors) <= limit:
        return np.ascontiguousarray(vectors)
    rows = np.sort(np.random.default_rng(0).choice(len(vectors), limit, replace=False))
    return np.ascontiguousarray(vectors[rows])


def add(index, vectors: np.ndarray, ids: np.ndarray, batch: int = 100_000) -> None:
    for start in range(0, len(vectors), batch):
        index.add_with_ids(
            np.ascontiguousarray(vectors[start : start + batch], dtype=np.float32),
            np.ascontiguousarray(ids[start : start + batch], dtype=np.int64),
        )


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
) -> tuple[np.ndarray, np.ndarray]:
    """Search ``index``; returns raw FAISS scores and ids (-1 where fewer than k exist).

    Search parameters must have been set on ``index`` with :func:`apply`; ``params`` is
    needed for filtered searches (typed FAISS parameters carry the selector) and the re-rank.
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
            D, I = index.search(queries, fetch)  # efSearch / nprobe were set by apply()
        else:
            faiss = _faiss()
            chosen = allowed if allowed is not None else excluded
            batch = faiss.IDSelectorBatch(np.ascontiguousarray(chosen, dtype=np.int64))
            selector = batch if allowed is not None else faiss.IDSelectorNot(batch)
            D, I = index.search(queries, fetch, params=_search_params(index, params, selector))
            del batch  # kept alive until here: the selectors hold raw pointers
    if rerank:
        D, I = _rerank(queries, I, k, vectors_of, metric)
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


def _rerank(queries, cand, k, vectors_of, metric):
    """Exact scores of the candidate ids (-1 = none), best k first, for all queries at once."""
    worst = np.inf if metric == "l2" else -np.inf
    valid = cand >= 0
    if not valid.any():
        return np.full((len(queries), k), worst, np.float32), np.full((len(queries), k), -1)
    safe = np.where(valid, cand, cand[valid][0])  # any held id; masked out below
    vecs = vectors_of(safe.reshape(-1)).reshape(*cand.shape, -1)
    if metric == "l2":
        scores = ((vecs - queries[:, None, :]) ** 2).sum(-1)
    else:
        scores = np.einsum("qmd,qd->qm", vecs, queries)
    scores[~valid] = worst
    order = np.argsort(scores if metric == "l2" else -scores, axis=1, kind="stable")[:, :k]
    out_i = np.take_along_axis(cand, order, 1)
    out_i[~np.take_along_axis(valid, order, 1)] = -1
    return np.take_along_axis(scores, order, 1).astype(np.float32), out_i


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
    d, rows = np.concatenate(parts_d, axis=1), np.concatenate(parts_i, axis=1)
    if len(parts_d) > 1:
        order = np.argsort(d if metric == "l2" else -d, axis=1, kind="stable")[:, :k_eff]
        d, rows = np.take_along_axis(d, order, 1), np.take_along_axis(rows, order, 1)
    D[:, :k_eff] = d
    I[:, :k_eff] = np.asarray(ids)[rows]
    return D, I


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true neighbours (ids >= 0) that ``found`` contains, over all queries."""
    hits = total = 0
    for f, t in zip(found, truth):
        t = t[t >= 0]
        total += len(t)
        hits += len(np.intersect1d(f, t))
    return hits / total if total else 1.0


def tune(
    index,
    vectors: np.ndarray,
    ids: np.ndarray,
    metric: str,
    params: dict[str, Any],
    *,
    k: int = 10,
    sample: int = 500,
    target: float = TUNE_TARGET,
    seed: int = 0,
    vectors_of=None,
) -> dict[str, Any]:
    """Smallest efSearch / nprobe (then rerank) reaching ``target`` recall@k on a sample.

    Returns the parameters with ``tuned_recall`` (the recall measured at them). Indexes with
    nothing to tune (flat, or too few vectors to matter) get their exact recall recorded.
    """
    faiss = _faiss()
    n = len(vectors)
    params = dict(params)
    if n == 0:
        return params
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, min(sample, n), replace=False))
    queries = np.ascontiguousarray(vectors[rows])
    own = np.asarray(ids)[rows]
    # Each sample item queries the index and must find its k true neighbours, itself
    # excluded: finding itself is trivial and would flatter the recall.
    _, truth = exact_search(vectors, ids, queries, k + 1, metric)
    truth = _drop_own(truth, own, k)

    def measure(p):
        apply(index, p)
        _, found = search(index, queries, k + 1, p, vectors_of=vectors_of, metric=metric)
        return recall_at(_drop_own(found, own, k), truth)

    inner = _inner(index)
    if isinstance(inner, faiss.IndexHNSW):
        knob, steps = "efSearch", [s for s in _EF_STEPS if s >= k]
    elif isinstance(inner, faiss.IndexIVF):
        knob, steps = "nprobe", [s for s in _NPROBE_STEPS if s <= inner.nlist] or [inner.nlist]
    else:
        knob, steps = None, []
    rerank_steps = _RERANK_STEPS if "rerank" in params else (1,)
    best = None
    for rr in rerank_steps:
        if "rerank" in params:
            params["rerank"] = rr
        for value in steps or [None]:
            if knob:
                params[knob] = value
            r = measure(params)
            best = (r, dict(params))
            if r >= target:
                break
        if best[0] >= target:
            break
    recall, params = best
    params["tuned_recall"] = round(float(recall), 4)
    return params


def _drop_own(found: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
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

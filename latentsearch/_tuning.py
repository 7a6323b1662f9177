"""Choosing and tuning an index by measurement, on queries the index does not hold.

Why held out: a stored vector that queries an index finds its neighbours through its own
links (HNSW) or its own list (IVF), so recall measured that way flatters the index (HNSW
tuned to "0.97" on stored points gave 0.939 on new queries at 100k). Here a seeded set of
rows (``HOLDOUT``, at most a tenth of the collection) is left out of the index while it is
tuned; they query it, their exact neighbours among the other rows are the truth, and they
are added to the index afterwards.

The sweep gives a **curve**: recall@10 on those queries for each value of the index's knob
(efSearch, nprobe; for lossy indexes the re-rank depth is chosen per nprobe). The build's
target recall picks the default point; ``recall=`` at query time picks another point of the
same curve, without a rebuild.

``auto`` (:func:`choose`): every candidate spec that fits the memory budget is built on a
seeded sample, tuned the same way, and timed at the target recall on a batch of the held-out
queries; the fastest wins. Up to ``SAMPLE`` vectors the sample is the whole collection.
Beyond it, the candidates are measured at two sample sizes and each one's queries/s is
extrapolated to n by the power law through the two points (IVF costs grow about as sqrt(n),
HNSW's about as log(n), so measuring at one small size alone would favour IVF). The figures,
and whether they were measured or extrapolated, go in the manifest.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from . import _index

__all__ = ["DEFAULT_RECALL", "build_tuned", "choose", "pick", "holdout_rows"]

DEFAULT_RECALL = 0.95
K = 10  # the curve is recall@10
HOLDOUT = 1000
SAMPLE = 100_000
CANDIDATES = ("ivf", "ivffs", "hnsw")
RERANKS = (1, 2, 3, 4, 6, 8, 12, 16)
STOP_AT = 0.997  # the sweep stops once a point reaches this recall


def holdout_rows(n: int, seed: int = 0, size: int = HOLDOUT) -> np.ndarray:
    """Seeded rows kept out of the index while it is tuned (none below 200 vectors)."""
    h = min(size, n // 10)
    if h < 20:
        return np.empty(0, np.int64)
    return np.sort(np.random.default_rng([seed, 7]).choice(n, h, replace=False))


def _truth(vectors, ids, rows, metric) -> np.ndarray:
    """Exact top-K ids of the held-out rows among the other rows."""
    held = np.asarray(ids)[rows]
    wide = K + 1 + min(len(rows), 3 * K)
    _, found = _index.exact_search(vectors, ids, np.ascontiguousarray(vectors[rows]), wide, metric)
    out = np.full((len(rows), K), -1, np.int64)
    for q, row in enumerate(found):
        row = row[(row >= 0) & ~np.isin(row, held)][:K]
        out[q, : len(row)] = row
    return out


def _sweep(index, queries, truth, params, vectors_of, metric, target) -> list[dict[str, Any]]:
    """Recall@K at each knob value (ascending), with the re-rank depth chosen per value."""
    knob, steps = _index.knob(index)
    lossy = "rerank" in params
    curve: list[dict[str, Any]] = []
    for value in steps or [None]:
        p = {k: v for k, v in params.items() if k != "tuned_recall"}
        if knob:
            p[knob] = int(value)
        if lossy:
            p["rerank"] = 1
            _, cand = _index.search(index, queries, K * RERANKS[-1], p, typed=True)
            scores = _index.exact_scores(queries, cand, vectors_of, metric)
            by_depth = []
            for r in RERANKS:  # the first K*r candidates are what a search for K*r returns
                _, got = _index.best_of(scores[:, : K * r], cand[:, : K * r], K, metric)
                by_depth.append((r, _index.recall_at(got, truth)))
            top = max(rec for _, rec in by_depth)
            depth, recall = next((r, rec) for r, rec in by_depth if rec >= top - 0.002)
            p["rerank"] = depth
        else:
            _, got = _index.search(index, queries, K, p, typed=True)
            recall = _index.recall_at(got, truth)
        curve.append({"params": p, "recall": round(float(recall), 4)})
        if recall >= STOP_AT:
            break
        if len(curve) >= 3 and recall >= target and recall - curve[-3]["recall"] < 0.001:
            break  # saturated past the target
    return curve


def pick(curve: list[dict[str, Any]], recall: float) -> dict[str, Any]:
    """The cheapest point of ``curve`` reaching ``recall``, else its best point."""
    for point in curve:
        if point["recall"] >= recall:
            return point
    return max(curve, key=lambda p: p["recall"])


def _time(index, queries, params, vectors_of, metric, reps: int = 3) -> float:
    """Queries/s of one batch search at ``params`` (best of ``reps``)."""
    best = np.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        _index.search(index, queries, K, params, vectors_of=vectors_of, metric=metric, typed=True)
        best = min(best, time.perf_counter() - t0)
    return float(len(queries) / best)


def build_tuned(plan: _index.IndexPlan, vectors: np.ndarray, ids: np.ndarray, metric: str,
                target: float = DEFAULT_RECALL, *, seed: int = 0, timed: bool = False):
    """Build ``plan``'s index, tune it on held-out rows, then add those rows.

    Returns the index (default parameters applied) and the manifest's ``index`` entry:
    spec, factory, params (the target's point, with ``tuned_recall``), target_recall,
    curve, holdout, imbalance (IVF) and, with ``timed``, qps_at_target.
    """
    n, dim = vectors.shape
    rows = holdout_rows(n, seed)
    vectors_of = lambda wanted: vectors[np.searchsorted(ids, wanted)]  # noqa: E731
    index = _index.build(plan.factory, dim, metric, vectors, ids, skip=rows)
    entry: dict[str, Any] = {"spec": plan.spec, "factory": plan.factory,
                             "target_recall": float(target)}
    knob, _ = _index.knob(index)
    params = dict(plan.params)
    if len(rows) and (knob or "rerank" in params):
        queries = np.ascontiguousarray(vectors[rows])
        truth = _truth(vectors, ids, rows, metric)
        curve = _sweep(index, queries, truth, params, vectors_of, metric, target)
        point = pick(curve, target)
        params = dict(point["params"], tuned_recall=point["recall"])
        entry.update(curve=curve, holdout=int(len(rows)))
        if timed:
            entry["qps_at_target"] = round(_time(index, queries, point["params"], vectors_of, metric))
        _index.add(index, vectors[rows], np.asarray(ids)[rows])
    elif len(rows) and timed:  # exact: recall 1.0 by construction
        queries = np.ascontiguousarray(vectors[rows])
        entry["qps_at_target"] = round(_time(index, queries, params, vectors_of, metric))
        _index.add(index, vectors[rows], np.asarray(ids)[rows])
    elif len(rows):
        _index.add(index, vectors[rows], np.asarray(ids)[rows])
    entry["params"] = params
    balance = _index.imbalance(index)
    if balance is not None:
        entry["imbalance"] = balance
    _index.apply(index, params)
    return index, entry


def choose(vectors: np.ndarray, ids: np.ndarray, metric: str, target: float = DEFAULT_RECALL,
           *, seed: int = 0) -> tuple[str, dict[str, Any], tuple | None]:
    """The spec ``auto`` resolves to for these vectors, the measurements behind it, and
    (when the candidates were built on the whole collection) the winner's (index, entry)."""
    n, dim = vectors.shape
    if n < _index.AUTO_FLAT_BELOW:
        return "flat", {"chosen": "flat",
                        "why": f"exact search below {_index.AUTO_FLAT_BELOW:,} vectors"}, None
    budget = _index.memory_budget()
    specs = [s for s in CANDIDATES if _index.index_bytes(s, n, dim) <= budget
             and not (s == "ivffs" and not _index._fs_m(dim))]
    if not specs:
        return "ivfpq", {"chosen": "ivfpq", "why": "no other candidate fits the memory budget",
                         "budget": budget}, None
    sizes = [n] if n <= SAMPLE else [SAMPLE // 4, SAMPLE]
    rng = np.random.default_rng([seed, 11])
    figures: dict[str, list[dict[str, Any]]] = {s: [] for s in specs}
    whole: dict[str, tuple] = {}
    for size in sizes:
        rows = np.sort(rng.choice(n, size, replace=False)) if size < n else np.arange(n)
        sample = np.ascontiguousarray(vectors[rows])
        sample_ids = np.asarray(ids)[rows]
        for spec in specs:
            plan = _index.plan(spec, size, dim)
            t0 = time.perf_counter()
            built, entry = build_tuned(plan, sample, sample_ids, metric, target, seed=seed,
                                       timed=True)
            if size == n:
                whole[spec] = (built, entry)
            figures[spec].append({
                "n": int(size), "factory": plan.factory,
                "recall": entry["params"].get("tuned_recall", 1.0),
                "qps": entry.get("qps_at_target", 0), "build_s": round(time.perf_counter() - t0, 2),
            })
    candidates = []
    for spec, points in figures.items():
        qps = float(points[-1]["qps"])
        if len(points) == 2 and points[0]["qps"] > 0 and qps > 0:
            slope = np.log(qps / points[0]["qps"]) / np.log(points[1]["n"] / points[0]["n"])
            qps = qps * (n / points[1]["n"]) ** slope
        candidates.append({"spec": spec, "qps": round(qps), "recall": points[-1]["recall"],
                           "estimated": len(points) == 2, "measured": points})
    reaching = [c for c in candidates if c["recall"] >= target - 0.005]
    best = (max(reaching, key=lambda c: c["qps"]) if reaching
            else max(candidates, key=lambda c: c["recall"]))
    report = {"chosen": best["spec"], "target_recall": float(target), "candidates": candidates}
    return best["spec"], report, whole.get(best["spec"])

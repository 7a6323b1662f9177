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

``auto`` (:func:`choose`): every candidate spec that fits the memory budget is built over the
whole collection, tuned the same way, and timed at the target recall on a batch of the
held-out queries; the fastest is kept. HNSW is a candidate up to ``HNSW_BUILD_LIMIT``
vectors only: its build alone took 44 s at 1M x 32 here (the build target is 30 s), and at
1M on hard data benchmarks/peers.py measured it slower than ``ivffs`` at recall 0.95 and 0.99.
Estimating candidates on a small sample was tried and dropped: the costs do not scale
alike (a query's fixed cost hides IVF,Flat's growing scan at 25k-100k; HNSW's cost per
distance grows with cache misses), and the estimates missed by 2-5x at 1M.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from latentsearch.index.backends import apply, imbalance, knob
from latentsearch.index.building import add, build
from latentsearch.index.exact import best_of, exact_scores, exact_search, recall_at
from latentsearch.index.searching import distances_per_query, search
from latentsearch.index.specs import (AUTO_FLAT_BELOW, IndexPlan, fs_subquantizers, index_bytes,
                                      memory_budget, plan)
from latentsearch.progress import bar

__all__ = ["DEFAULT_RECALL", "build_tuned", "complete", "choose", "pick", "holdout_rows"]

DEFAULT_RECALL = 0.95
K = 10  # the curve is recall@10
HOLDOUT = 1000
CANDIDATES = ("ivffs", "ivf", "hnsw")  # also the order of preference in a tie
HNSW_BUILD_LIMIT = 200_000
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
    _, found = exact_search(vectors, ids, np.ascontiguousarray(vectors[rows]), wide, metric)
    out = np.full((len(rows), K), -1, np.int64)
    for q, row in enumerate(found):
        row = row[(row >= 0) & ~np.isin(row, held)][:K]
        out[q, : len(row)] = row
    return out


def _sweep(index, queries, truth, params, vectors_of, metric, target, *,
           after: int | None = None, stop_at: float = STOP_AT) -> list[dict[str, Any]]:
    """Recall@K at each knob value (ascending, past ``after``), with the re-rank depth chosen
    per value, until ``stop_at`` is reached or recall stops growing past the target."""
    name, steps = knob(index)
    if after is not None:
        steps = [v for v in steps if v > after]
        if not steps:
            return []
    lossy = "rerank" in params
    curve: list[dict[str, Any]] = []
    for value in steps or [None]:
        p = {k: v for k, v in params.items() if k != "tuned_recall"}
        if name:
            p[name] = int(value)
        if lossy:
            p["rerank"] = 1
            _, cand = search(index, queries, K * RERANKS[-1], p, typed=True)
            scores = exact_scores(queries, cand, vectors_of, metric)
            by_depth = []
            for r in RERANKS:  # the first K*r candidates are what a search for K*r returns
                _, got = best_of(scores[:, : K * r], cand[:, : K * r], K, metric)
                by_depth.append((r, recall_at(got, truth)))
            top = max(rec for _, rec in by_depth)
            depth, recall = next((r, rec) for r, rec in by_depth if rec >= top - 0.002)
            p["rerank"] = depth
        else:
            _, got = search(index, queries, K, p, typed=True)
            recall = recall_at(got, truth)
        curve.append({"params": p, "recall": round(float(recall), 4)})
        if recall >= stop_at:
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
        search(index, queries, K, params, vectors_of=vectors_of, metric=metric, typed=True)
        best = min(best, time.perf_counter() - t0)
    return float(len(queries) / best)


def build_tuned(plan: IndexPlan, vectors: np.ndarray, ids: np.ndarray, metric: str,
                target: float = DEFAULT_RECALL, *, seed: int = 0, timed: bool = False,
                truth: np.ndarray | None = None, finish: bool = True, fill=None):
    """Build ``plan``'s index, tune it on held-out rows, then add those rows.

    Returns the index (default parameters applied) and the manifest's ``index`` entry:
    spec, factory, params (the target's point, with ``tuned_recall``), target_recall,
    curve, holdout, imbalance (IVF) and, with ``timed``, qps_at_target and distances (per
    query, FAISS's counters). With ``finish=False`` the sweep stops at the target and the
    held-out rows stay out: :func:`complete` finishes the candidate ``auto`` keeps.
    ``fill`` fills the trained index (see :func:`latentsearch.index.building.build`).
    """
    n, dim = vectors.shape
    rows = holdout_rows(n, seed)
    index = build(plan.factory, dim, metric, vectors, ids, skip=rows, fill=fill)
    entry: dict[str, Any] = {"spec": plan.spec, "factory": plan.factory,
                             "target_recall": float(target)}
    params = dict(plan.params)
    vectors_of = _rows_of(vectors, ids)
    if len(rows) and (knob(index)[0] or "rerank" in params):
        queries = np.ascontiguousarray(vectors[rows])
        truth = _truth(vectors, ids, rows, metric) if truth is None else truth
        curve = _sweep(index, queries, truth, params, vectors_of, metric, target,
                       stop_at=STOP_AT if finish else target)
        point = pick(curve, target)
        params = dict(point["params"], tuned_recall=point["recall"])
        entry.update(curve=curve, holdout=int(len(rows)))
        if timed:
            entry["qps_at_target"] = round(_time(index, queries, point["params"], vectors_of,
                                                 metric))
            entry["distances"] = round(distances_per_query(index, queries, point["params"], K), 1)
    elif len(rows) and timed:  # exact: recall 1.0 by construction
        queries = np.ascontiguousarray(vectors[rows])
        entry["qps_at_target"] = round(_time(index, queries, params, vectors_of, metric))
    entry["params"] = params
    if finish:  # swept to STOP_AT already: only the rows to add back
        return complete(index, entry, vectors, ids, metric, truth, seed=seed, extend=False)
    return index, entry


def _rows_of(vectors, ids):
    return lambda wanted: vectors[np.searchsorted(ids, wanted)]


def complete(index, entry: dict[str, Any], vectors, ids, metric: str,
             truth: np.ndarray | None = None, *, seed: int = 0, extend: bool = True):
    """Finish a candidate built with ``finish=False``: the rest of its curve (up to
    ``STOP_AT``, for query-time ``recall=``), then the held-out rows go into the index."""
    rows = holdout_rows(len(vectors), seed)
    name, _ = knob(index)
    curve = entry.get("curve")
    if extend and curve and name and curve[-1]["recall"] < STOP_AT:
        queries = np.ascontiguousarray(vectors[rows])
        truth = _truth(vectors, ids, rows, metric) if truth is None else truth
        base = {k: v for k, v in curve[-1]["params"].items() if k != name}
        curve += _sweep(index, queries, truth, base, _rows_of(vectors, ids), metric,
                        entry["target_recall"], after=curve[-1]["params"][name])
    if len(rows):
        add(index, vectors[rows], np.asarray(ids)[rows])
    balance = imbalance(index)
    if balance is not None:
        entry["imbalance"] = balance
    apply(index, entry["params"])
    return index, entry


TIE = 0.15  # q/s within this share of the fastest count as a tie


def _best(candidates: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """The fastest candidate reaching the target; within ``TIE`` of it, the one first in
    CANDIDATES order (ivffs: the smallest index; ivf; hnsw: no in-place remove, slow build), so that
    timing noise does not flip the choice between two builds of the same data."""
    reaching = [c for c in candidates if c["recall"] >= target - 0.005]
    if not reaching:
        return max(candidates, key=lambda c: c["recall"])
    top = max(c["qps"] for c in reaching)
    near = [c for c in reaching if c["qps"] >= (1 - TIE) * top]
    return min(near, key=lambda c: CANDIDATES.index(c["spec"]))


def choose(vectors: np.ndarray, ids: np.ndarray, metric: str, target: float = DEFAULT_RECALL,
           *, seed: int = 0, fill=None) -> tuple[dict[str, Any], tuple]:
    """What ``auto`` measured for these vectors, and the winner's (index, manifest entry),
    built over every vector."""
    n, dim = vectors.shape
    if n < AUTO_FLAT_BELOW:
        why = f"exact search below {AUTO_FLAT_BELOW:,} vectors"
        return {"chosen": "flat", "why": why}, build_tuned(
            plan("flat", n, dim), vectors, ids, metric, target, seed=seed, fill=fill)
    budget = memory_budget()
    specs, left_out = [], {}
    for spec in CANDIDATES:
        if spec == "ivffs" and not fs_subquantizers(dim):
            left_out[spec] = f"no fast-scan layout for dimension {dim}"
        elif spec == "hnsw" and n > HNSW_BUILD_LIMIT:
            left_out[spec] = f"not built above {HNSW_BUILD_LIMIT:,} vectors (build time)"
        elif index_bytes(spec, n, dim) > budget:
            left_out[spec] = f"over the memory budget of {budget:,} bytes"
        else:
            specs.append(spec)
    if not specs:
        return {"chosen": "ivfpq", "left_out": left_out}, build_tuned(
            plan("ivfpq", n, dim), vectors, ids, metric, target, seed=seed, fill=fill)
    rows = holdout_rows(n, seed)
    truth = _truth(vectors, ids, rows, metric) if len(rows) else None  # shared by all
    built, candidates = {}, []
    for spec in bar(specs, desc="auto: measuring candidates", unit="index"):
        planned = plan(spec, n, dim)
        t0 = time.perf_counter()
        index, entry = build_tuned(planned, vectors, ids, metric, target, seed=seed, timed=True,
                                   truth=truth, finish=False, fill=fill)
        candidates.append({"spec": spec, "factory": planned.factory,
                           "recall": entry["params"].get("tuned_recall", 1.0),
                           "qps": entry.get("qps_at_target", 0),
                           "distances_per_query": entry.get("distances", 0.0),
                           "build_s": round(time.perf_counter() - t0, 2)})
        best = _best(candidates, target)
        built = {k: v for k, v in built.items() if k == best["spec"]}  # free the losers
        if best["spec"] == spec:
            built[spec] = (index, entry)
        del index
    best = _best(candidates, target)
    report = {"chosen": best["spec"], "target_recall": float(target), "candidates": candidates}
    if left_out:
        report["left_out"] = left_out
    index, entry = built[best["spec"]]
    return report, complete(index, entry, vectors, ids, metric, truth, seed=seed)

"""The claim, measured: do closer vectors mean more similar items?

For a labelled collection a seeded sample of items queries the collection (itself excluded)
and the report gives, computed in one run on the same items:

- label agreement@k (the mean share of the k nearest that carry the query's label) and kNN
  vote accuracy, for the stored latents with exact search;
- the same for baselines: ``chance`` (from label frequencies), ``raw`` (pixels for images,
  TF-IDF cosine for text) with exact search, and ``pca`` (the raw input reduced by PCA to
  the latent dimension);
- agreement by neighbour rank (1..k), and by distance band: the neighbours up to rank
  ``max(k, 1000)`` of every query, cut into deciles of distance, nearest band first;
- recall@k of the collection's own index against exact search on the stored vectors.

Without labels only the recall is measured, and the report says why.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from latentsearch.errors import InvalidInput
from latentsearch.index import drop_own, exact_search, recall_at
from latentsearch.progress import bar

if TYPE_CHECKING:  # annotations only
    from latentsearch.collection import Collection

__all__ = ["CURVE_K", "BANDS", "Report", "evaluate", "exact_neighbours", "label_agreement", "pca",
           "tfidf"]

#: neighbours per query behind the agreement-by-distance curve
CURVE_K = 1000
#: distance bands (deciles) of that curve
BANDS = 10


@dataclass(frozen=True)
class Report:
    """What ``evaluate`` measured; ``to_dict()`` is the JSON of ``evaluate --json``."""

    collection: str
    k: int
    n_queries: int
    recall_vs_exact: float
    agreement: float | None = None
    vote_accuracy: float | None = None
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    agreement_by_rank: list[float] = field(default_factory=list)
    agreement_by_distance: list[dict[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """The report as text for a terminal."""
        out = [f"collection {self.collection}: {self.n_queries} queries, k={self.k}"]
        if self.agreement is not None:
            out += ["", f"{'':<22}{'agreement@' + str(self.k):>14}{'vote accuracy':>16}",
                    f"{'latents (this index)':<22}{self.agreement:>14.3f}{self.vote_accuracy:>16.3f}"]
            for name, row in self.baselines.items():
                out.append(f"{_BASELINE_NAMES.get(name, name):<22}{row['agreement']:>14.3f}"
                           f"{row['vote_accuracy']:>16.3f}")
            out += ["", "agreement by neighbour rank:",
                    "  " + "  ".join(f"{r}:{a:.2f}" for r, a in enumerate(self.agreement_by_rank, 1))]
            out += ["", f"agreement by distance (the {CURVE_K} nearest of each query, in deciles):",
                    f"  {'band':>4}  {'up to distance':>14}  {'agreement':>9}"]
            for i, band in enumerate(self.agreement_by_distance, 1):
                bar = "#" * int(round(band["agreement"] * 40))
                out.append(f"  {i:>4}  {band['max_distance']:>14.4f}  {band['agreement']:>9.3f}  {bar}")
        out += ["", f"recall@{self.k} of the index against exact search: {self.recall_vs_exact:.3f}"]
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)


_BASELINE_NAMES = {"chance": "chance", "raw": "raw input, exact", "pca": "PCA of raw input"}


def _labels_of(col: Collection, ids: np.ndarray) -> np.ndarray:
    return np.array([hit.label for hit in col.get(ids)], dtype=object)


def exact_neighbours(base: np.ndarray, queries_rows: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Rows of the k exact neighbours of base[queries_rows] among base, the query's own row
    excluded (-1 where there are fewer)."""
    _, rows = exact_search(base, np.arange(len(base)), base[queries_rows], k + 1, metric)
    return drop_own(rows, queries_rows, k)


def label_agreement(
    nbr_rows: np.ndarray, labels: np.ndarray, query_rows: np.ndarray
) -> tuple[float, float, list[float]]:
    """(agreement, vote accuracy, agreement per rank) of neighbour rows (-1 = none)."""
    valid = nbr_rows >= 0
    same = (labels[np.maximum(nbr_rows, 0)] == labels[query_rows][:, None]).astype(bool) & valid
    agreement = float(same.sum() / max(valid.sum(), 1))
    votes = 0
    for q, row in enumerate(nbr_rows):
        row = row[row >= 0]
        if len(row):
            counts = Counter(labels[row].tolist())
            top = max(counts.values())
            winner = next(lab for lab in labels[row].tolist() if counts[lab] == top)  # nearest wins ties
            votes += winner == labels[query_rows[q]]
    by_rank = (same.sum(0) / np.maximum(valid.sum(0), 1)).tolist()
    return agreement, votes / len(nbr_rows), by_rank


def tfidf(
    texts: list[str], max_features: int = 20_000, fit_on: list[str] | None = None
) -> np.ndarray:
    """Dense TF-IDF rows (sublinear tf, smooth idf, unit length) over lower-cased words.

    Vocabulary and idf come from ``fit_on`` (default: ``texts`` themselves), so queries can
    be weighed by a collection's statistics.
    """
    def words(t: str) -> list[str]:
        return re.findall(r"\w+", t.lower())

    corpus = [words(t) for t in (texts if fit_on is None else fit_on)]
    tokens = corpus if fit_on is None else [words(t) for t in texts]
    df = Counter(w for toks in corpus for w in set(toks))
    vocab = {w: i for i, (w, _) in enumerate(df.most_common(max_features))}
    idf = np.log((1 + len(corpus)) / (1 + np.array([df[w] for w in vocab], dtype=np.float64))) + 1
    out = np.zeros((len(texts), len(vocab)), dtype=np.float32)
    for r, toks in enumerate(tokens):
        for w, c in Counter(toks).items():
            if w in vocab:
                out[r, vocab[w]] = (1 + np.log(c)) * idf[vocab[w]]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1, norms)


def _raw_input(col: Collection) -> tuple[np.ndarray | None, str, str | None]:
    """(raw matrix aligned with col.ids(), its metric, or None and why)."""
    if col.modality == "image":
        try:
            raw = col.images(col.ids()).astype(np.float32).reshape(len(col), -1) / 255.0
        except InvalidInput:  # a collection built from vectors of images made elsewhere
            return None, "l2", "the collection keeps no images"
        return raw, "l2", None
    if col.modality == "text":
        texts = [h.text or "" for h in col.get(col.ids())]
        if len(texts) * 20_000 > 400_000_000:
            return None, "cosine", "too many texts for the dense TF-IDF baseline"
        return tfidf(texts), "cosine", None
    return None, "l2", "vectors made elsewhere have no raw input to compare with"


def pca(raw: np.ndarray, dim: int) -> np.ndarray:
    """``raw`` centred and projected on its first ``dim`` principal components (fitted on
    at most 20,000 rows), as float32."""
    centred = raw - raw.mean(0)
    _, _, vt = np.linalg.svd(centred[: min(len(centred), 20_000)], full_matrices=False)
    return np.ascontiguousarray(centred @ vt[:dim].T, dtype=np.float32)


def evaluate(col: Collection, k: int = 10, sample: int = 1000, seed: int = 0, *,
             quiet: bool = False) -> Report:
    """Measure the claim on ``col``: see the module docstring. ``quiet``: no progress bar."""
    if not isinstance(k, int) or k < 1:
        raise InvalidInput(f"k must be a positive integer, got {k!r}")
    n = len(col)
    if n < 2:
        raise InvalidInput(f"collection {col.name} has {n} items: evaluation needs at least 2")
    ids = col.ids()
    vectors = col.vectors()
    rng = np.random.default_rng(seed)
    query_rows = np.sort(rng.choice(n, min(sample, n), replace=False))
    k_eff = min(k, n - 1)
    notes = []
    if k_eff < k:
        notes.append(f"only {n - 1} other items: k reduced to {k_eff}")

    stages = bar(total=4, desc=f"evaluate {col.name}", unit="stage", quiet=quiet)
    exact_rows = exact_neighbours(vectors, query_rows, max(k_eff, min(CURVE_K, n - 1)), col.metric)
    stages.update(1)  # exact neighbours of the latents
    found_ids = np.full((len(query_rows), k_eff), -1, dtype=np.int64)
    for r, hits in enumerate(col.search_batch(vectors[query_rows], k=k_eff + 1)):
        row = [h.id for h in hits if h.id != ids[query_rows[r]]][:k_eff]
        found_ids[r, : len(row)] = row
    exact_ids = np.where(exact_rows[:, :k_eff] >= 0, ids[np.maximum(exact_rows[:, :k_eff], 0)], -1)
    recall = recall_at(found_ids, exact_ids)
    stages.update(1)  # the index's recall

    labels = _labels_of(col, ids)
    if all(lab is None for lab in labels):
        notes.append("the collection has no labels: agreement needs labels, only recall was measured")
        stages.close()
        return Report(col.name, k_eff, len(query_rows), round(recall, 4), notes=notes)
    has = np.array([lab is not None for lab in labels])
    if not has.all():
        notes.append(f"{int((~has).sum())} unlabelled items count as a label of their own")
    labels = np.array(["\0none" if lab is None else lab for lab in labels], dtype=object)

    agreement, vote, by_rank = label_agreement(exact_rows[:, :k_eff], labels, query_rows)
    freq = np.array(list(Counter(labels.tolist()).values()), dtype=float) / n
    baselines = {"chance": {"agreement": round(float((freq ** 2).sum()), 4),
                            "vote_accuracy": round(float(freq.max()), 4)}}
    raw, raw_metric, why = _raw_input(col)
    if raw is None:
        notes.append(f"no raw or PCA baseline: {why}")
    else:
        nbrs = exact_neighbours(raw, query_rows, k_eff, raw_metric)
        a, v, _ = label_agreement(nbrs, labels, query_rows)
        baselines["raw"] = {"agreement": round(a, 4), "vote_accuracy": round(v, 4)}
        reduced = pca(raw, col.dim)
        nbrs = exact_neighbours(reduced, query_rows, k_eff, "l2")
        a, v, _ = label_agreement(nbrs, labels, query_rows)
        baselines["pca"] = {"agreement": round(a, 4), "vote_accuracy": round(v, 4)}
    stages.update(1)  # the baselines

    bands = _by_distance(vectors, exact_rows, query_rows, labels, col.metric)
    stages.close()
    return Report(
        col.name, k_eff, len(query_rows), round(recall, 4), round(agreement, 4), round(vote, 4),
        baselines, [round(a, 4) for a in by_rank], bands, notes,
    )


def _by_distance(vectors: np.ndarray, nbr_rows: np.ndarray, query_rows: np.ndarray,
                 labels: np.ndarray, metric: str) -> list[dict[str, float]]:
    """Agreement in each of ``BANDS`` equal-count bands of neighbour distance, nearest first."""
    valid = nbr_rows >= 0
    q_idx = np.repeat(query_rows, nbr_rows.shape[1]).reshape(nbr_rows.shape)[valid]
    n_idx = nbr_rows[valid]
    if metric == "l2":
        dist = np.sqrt(((vectors[q_idx] - vectors[n_idx]) ** 2).sum(1))
    else:
        dist = 1.0 - (vectors[q_idx] * vectors[n_idx]).sum(1)
    same = labels[q_idx] == labels[n_idx]
    order = np.argsort(dist, kind="stable")
    out = []
    for part in np.array_split(order, BANDS):
        if len(part):
            out.append({"max_distance": round(float(dist[part].max()), 4),
                        "agreement": round(float(same[part].mean()), 4)})
    return out

"""Text encoders judged against people (STS-B) and against themselves (``news`` halves).

Run from the repository root (about 3 minutes on one core)::

    python -m benchmarks.text [--seed 0] [--no-news]

STS Benchmark (Cer et al. 2017; ../shared/data/stsb_train.tsv and stsb_dev.tsv, not
shipped): ONE collection is built from every sentence of train and dev (both sides of every
pair; the scores are never used for training), then each dev pair scores the cosine of its
two sentences' vectors, and the figure is Spearman's rank correlation between those cosines
and the human scores. The train pairs' Spearman is shown beside it: the prior's weights
were chosen on dev, so train is the check that they were not fitted to dev.

Half-document retrieval on ``news``: every one of the 300 articles is split by words into a
first and a second half. The second halves are the collection (each encoder trained on them
only); the first halves are the queries; a query scores a hit at k when its own article's
second half is among the k nearest by cosine (an identical duplicate counts as its own).

Rows, all in one run:

- ``default (prior, adapted)``: ``build text``: the WordNet prior adapted to the collection,
  identity + synonym pooling (latentsearch/encoders/_prior.py);
- ``prior, not adapted``: the same without the contrastive adaptation;
- ``prior alone``: the shipped WordNet vectors, idf x sublinear-tf pooled, no identity part;
- ``from scratch (--prior none)``: the encoder learned from the collection alone;
- ``from scratch, untrained``: the same with its random initial embeddings;
- ``TF-IDF cosine``: numpy, words = ``\\w+`` lower-cased, sublinear tf, smooth idf fitted on
  the collection, l2-normalised rows;
- ``fused: 0.7 TF-IDF + 0.3 prior alone``: the two cosines mixed per pair.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from latentsearch.report.evaluate import tfidf  # noqa: E402
from latentsearch.io.texts import load_text_source  # noqa: E402
from latentsearch.encoders.prior import Prior, shipped_prior  # noqa: E402
from latentsearch.encoders.text import TextEncoder  # noqa: E402


def halves(texts: list[str]) -> tuple[list[str], list[str]]:
    first, second = [], []
    for t in texts:
        words = t.split()
        h = len(words) // 2
        first.append(" ".join(words[:h]))
        second.append(" ".join(words[h:]))
    return first, second


def recall(scores: np.ndarray, docs: list[str], ks=(1, 10)) -> dict[int, float]:
    """Share of queries i whose doc i (or an identical copy) is in the top k of row i."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, : max(ks)]
    out = {}
    for k in ks:
        hits = [any(docs[j] == docs[i] for j in order[i, :k]) for i in range(len(docs))]
        out[k] = float(np.mean(hits))
    return out


STS_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def read_sts(path: Path) -> list[tuple[float, str, str]]:
    """(score, sentence1, sentence2) per row; columns beyond the seventh are ignored."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            f = line.rstrip("\n").split("\t")
            if len(f) >= 7:
                out.append((float(f[4]), f[5], f[6]))
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho (ties get their mean rank), numpy only."""
    def ranks(x):
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        _, inv, cnt = np.unique(x, return_inverse=True, return_counts=True)
        return (np.bincount(inv, weights=r) / cnt)[inv]
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def prior_alone(enc: TextEncoder, texts: list[str], prior: Prior) -> np.ndarray:
    """The prior's word vectors pooled with the encoder's idf x sublinear-tf weights."""
    rows = np.array([-1, -1] + [prior.row(w) for w in enc.vocabulary])
    table = np.zeros((len(rows), prior.dim), np.float32)
    table[rows >= 0] = prior.vectors[rows[rows >= 0]]
    out = np.zeros((len(texts), prior.dim), np.float32)
    for i, t in enumerate(texts):
        ids = enc.token_ids(t)
        ids = ids[(ids > 1) & (rows[ids] >= 0)]
        if ids.size:
            u, c = np.unique(ids, return_counts=True)
            v = (enc._tw[u] * (1 + np.log(c))) @ table[u]
            out[i] = v / max(float(np.linalg.norm(v)), 1e-12)
    return out


def variants(seed: int):
    """(row name, function texts -> fitted encoder or None) for the encoder rows."""
    return [
        ("default (prior, adapted)", dict(prior="wordnet")),
        ("prior, not adapted", dict(prior="wordnet", train=False)),
        ("from scratch (--prior none)", dict()),
        ("from scratch, untrained", dict(train=False)),
    ]


def run_sts(seed: int, folder: Path = STS_DIR) -> list[tuple[str, float, float, float]]:
    train, dev = read_sts(folder / "stsb_train.tsv"), read_sts(folder / "stsb_dev.tsv")
    collection = [s for r in train + dev for s in r[1:]]
    print(f"STS-B: one collection of {len(collection)} sentences (train + dev, both sides); "
          f"Spearman of cosine vs human score on {len(dev)} dev pairs (and {len(train)} train "
          f"pairs)")
    gold = {"dev": np.array([r[0] for r in dev]), "train": np.array([r[0] for r in train])}
    pairs = {"dev": dev, "train": train}
    prior = shipped_prior()
    rows, cos_by_name = [], {}

    def judge(name, encode, secs):
        cos = {}
        for split, data in pairs.items():
            a, b = encode([r[1] for r in data]), encode([r[2] for r in data])
            cos[split] = (a * b).sum(1)
        cos_by_name[name] = cos
        rows.append((name, spearman(cos["dev"], gold["dev"]),
                     spearman(cos["train"], gold["train"]), secs))

    default = None
    for name, kw in variants(seed):
        t0 = time.perf_counter()
        enc = TextEncoder.fit(collection, seed=seed, quiet=True, **kw)
        judge(name, enc.encode, time.perf_counter() - t0)
        default = default or enc
    judge("prior alone (WordNet vectors)", lambda t: prior_alone(default, t, prior), 0.0)
    t0 = time.perf_counter()
    judge("TF-IDF cosine", lambda t: tfidf(t, fit_on=collection), time.perf_counter() - t0)
    fused = {k: 0.7 * cos_by_name["TF-IDF cosine"][k]
             + 0.3 * cos_by_name["prior alone (WordNet vectors)"][k] for k in pairs}
    rows.append(("fused: 0.7 TF-IDF + 0.3 prior alone", spearman(fused["dev"], gold["dev"]),
                 spearman(fused["train"], gold["train"]), 0.0))
    print(f"\n{'variant':38s} {'dev rho':>8s} {'train rho':>10s} {'fit s':>7s}")
    for name, d, t, secs in rows:
        print(f"{name:38s} {d:8.4f} {t:10.4f} {secs:7.1f}")
    return rows


def run_news(seed: int):
    texts = load_text_source("news").texts
    queries, docs = halves(texts)
    print("\nhalf-document retrieval on 'news': %d articles; encoders trained on the %d second "
          "halves only (the collection), queried with the first halves; exact cosine search"
          % (len(texts), len(docs)))
    prior = shipped_prior()
    rows, default = [], None
    for name, kw in variants(seed):
        t0 = time.perf_counter()
        enc = TextEncoder.fit(docs, seed=seed, quiet=True, **kw)
        secs = time.perf_counter() - t0
        r = recall(enc.encode(queries) @ enc.encode(docs).T, docs)
        rows.append((name, r[1], r[10], secs))
        default = default or enc
    pa_q, pa_d = prior_alone(default, queries, prior), prior_alone(default, docs, prior)
    r = recall(pa_q @ pa_d.T, docs)
    rows.append(("prior alone (WordNet vectors)", r[1], r[10], 0.0))
    t0 = time.perf_counter()
    qa, da = tfidf(queries, fit_on=docs), tfidf(docs)
    r = recall(qa @ da.T, docs)
    rows.append(("TF-IDF cosine", r[1], r[10], time.perf_counter() - t0))
    r = recall(0.7 * (qa @ da.T) + 0.3 * (pa_q @ pa_d.T), docs)
    rows.append(("fused: 0.7 TF-IDF + 0.3 prior alone", r[1], r[10], 0.0))
    print(f"\n{'variant':38s} {'recall@1':>9s} {'recall@10':>10s} {'fit s':>7s}")
    for name, r1, r10, secs in rows:
        print(f"{name:38s} {r1:9.3f} {r10:10.3f} {secs:7.1f}")
    fire = default.encode(docs)
    top = np.argsort(-(fire @ default.encode("bushfires near Sydney")[0]))[:5]
    print("\n'bushfires near Sydney', default encoder, top 5 of the collection "
          "(the second halves):")
    for i in top:
        print("  ", docs[i][:90])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-news", action="store_true")
    ap.add_argument("--no-sts", action="store_true")
    args = ap.parse_args(argv)
    if not args.no_sts:
        run_sts(args.seed)
    if not args.no_news:
        run_news(args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())

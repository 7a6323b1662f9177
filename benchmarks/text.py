"""Half-document retrieval on the built-in ``news`` sample: is the text encoder any good?

Run from the repository root::

    python -m benchmarks.text [--dim 512] [--epochs N] [--seed 0]

Protocol: every one of the 300 articles is split by words into a first and a second half.
The second halves are the collection: each encoder variant is trained on them only (as
``build text`` trains on the collection's own texts), they are encoded and searched exactly
by cosine similarity. The first halves are the queries; a query scores a hit at k when its
own article's second half is among the k nearest (an identical duplicate article counts as
its own: the sample has 7 exact duplicates). Variants, all in one run:

- ``trained, idf pooling``: the default encoder (contrastive training, word vectors composed
  with character n-gram vectors, idf x sublinear-tf weighted mean of the word vectors);
- ``trained, no subwords``: the same without the character n-grams;
- ``trained, plain mean``: the same training with an unweighted mean over the tokens;
- ``untrained (random)``: the default model with its random initial embeddings;
- ``TF-IDF cosine``: numpy, words = ``\\w+`` lower-cased, sublinear tf, smooth idf fitted on
  the second halves, l2-normalised rows, exact cosine.

It also times ``TextEncoder.encode`` against a bare call of the same Keras model on the
same batch (the 300 queries, and a single query).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from latentsearch._evaluate import tfidf  # noqa: E402
from latentsearch._texts import load_text_source  # noqa: E402
from latentsearch.encoders._text import TextEncoder  # noqa: E402


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


def best_times(fns, repeat: int = 7) -> list[float]:
    """Best wall time of each function, calls interleaved so machine load hits all alike."""
    for fn in fns:
        fn()  # warm up (allocates, fills caches)
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [min(ts) for ts in times]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    texts = load_text_source("news").texts
    queries, docs = halves(texts)
    print("half-document retrieval on 'news': %d articles; encoders trained on the %d second "
          "halves only (the collection), queried with the first halves; exact cosine search"
          % (len(texts), len(docs)))

    rows = []
    variants = [
        ("trained, idf pooling (default)", dict()),
        ("trained, no subwords", dict(subwords=False)),
        ("trained, plain mean", dict(weighting="mean", sublinear_tf=False)),
        ("untrained (random), idf pooling", dict(train=False)),
        ("untrained (random), plain mean",
         dict(train=False, weighting="mean", sublinear_tf=False)),
    ]
    default = None
    for name, kw in variants:
        t0 = time.perf_counter()
        enc = TextEncoder.fit(
            docs, dim=args.dim, epochs=args.epochs, seed=args.seed, quiet=True, **kw
        )
        secs = time.perf_counter() - t0
        dv, qv = enc.encode(docs), enc.encode(queries)
        r = recall(qv @ dv.T, docs)
        rows.append((name, r[1], r[10], secs, enc.config()))
        if default is None:
            default = enc
    t0 = time.perf_counter()
    qa, da = tfidf(queries, fit_on=docs), tfidf(docs)
    r = recall(qa @ da.T, docs)
    rows.append(("TF-IDF cosine (numpy)", r[1], r[10], time.perf_counter() - t0, None))

    print(f"\n{'variant':36s} {'recall@1':>9s} {'recall@10':>10s} {'fit s':>7s}")
    for name, r1, r10, secs, _ in rows:
        print(f"{name:36s} {r1:9.3f} {r10:10.3f} {secs:7.1f}")
    cfg = rows[0][4]
    print(f"\ndefault encoder: dim {cfg['dim']}, vocabulary {cfg['vocab_size'] - 2} words, "
          f"{cfg['epochs']} epochs ({cfg['steps']} steps), final loss {cfg['final_loss']}, "
          f"train {cfg['train_seconds']:.1f} s")

    # throughput: encode() against a bare call of the same Keras model, same batch
    import tensorflow as tf

    model = default.keras_model
    print("\nencoding throughput (best of 7, interleaved):")
    batches = [
        ("300 queries (first halves)", queries),
        ("1 short query", ["bushfires near Sydney"]),
    ]
    for label, batch in batches:
        x = tf.constant(batch, dtype=tf.string)[:, None]
        t_bare, t_enc = best_times(
            [lambda: model(x, training=False), lambda: default.encode(batch)]
        )
        print(f"  {label:28s} bare Keras {len(batch) / t_bare:9.0f} items/s   "
              f"TextEncoder.encode {len(batch) / t_enc:9.0f} items/s   ratio {t_bare / t_enc:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

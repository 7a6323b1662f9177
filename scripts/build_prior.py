"""Rebuild the shipped text prior (latentsearch/data/prior_wordnet.npz) from WordNet 3.0.

    apt-get install wordnet-base     # Princeton WordNet 3.0, /usr/share/wordnet
    python scripts/build_prior.py [--wordnet /usr/share/wordnet] [--out FILE]

Every synset becomes one text (lemmas, hypernyms' and similar synsets' lemmas, gloss,
examples); the project's contrastive text encoder (TextEncoder.fit: two views of a text must
find each other among the batch, words composed with character n-grams) is trained on them;
the word vectors are cut to the most frequent ``--words``, centred, unit-normalised and
stored as float16, uncompressed (so a query loads them without inflating: 24 MB).
The defaults are the shipped file's (about 2.5 minutes on one core). Deterministic for a given seed on one machine (TensorFlow on CPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from latentsearch.encoders.prior import (  # noqa: E402
    PRIOR_PATH, Prior, wordnet_exceptions, wordnet_texts,
)
from latentsearch.encoders.text import TextEncoder  # noqa: E402


def build(wordnet: str | Path, out: str | Path, *, dim: int = 128, epochs: int = 6,
          words: int = 92_000, limit: int | None = None, seed: int = 0,
          subwords: bool = False, quiet: bool = False) -> Prior:
    """Train the prior on WordNet at ``wordnet`` and write it to ``out``."""
    t0 = time.perf_counter()
    texts = wordnet_texts(wordnet, limit=limit)
    enc = TextEncoder.fit(texts, dim=dim, epochs=epochs, seed=seed, quiet=quiet,
                          subwords=subwords)
    vocab = enc.vocabulary[:words]  # most frequent first
    emb = enc._emb[2 : 2 + len(vocab)].astype(np.float64)
    emb -= emb.mean(axis=0)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    prior = Prior(vocab, emb.astype(np.float16), wordnet_exceptions(wordnet))
    prior.save(out)
    if not quiet:
        print(f"prior: {len(texts)} synset texts, {len(vocab)} words x {dim}, "
              f"{Path(out).stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)
    return prior


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wordnet", default="/usr/share/wordnet")
    ap.add_argument("--out", default=str(PRIOR_PATH))
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--words", type=int, default=92_000)
    ap.add_argument("--limit", type=int, default=None, help="synsets per data file (tests)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    build(args.wordnet, args.out, dim=args.dim, epochs=args.epochs, words=args.words,
          limit=args.limit, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())

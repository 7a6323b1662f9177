"""What a corpus gives the text encoder before any training: vocabulary, idf, subwords.

Why numpy and not Keras' ``TextVectorization.adapt``: one ``np.unique`` over the flat
tokens gives the vocabulary (most frequent first, ties alphabetical), the document
frequencies and each text's token ids at once, with the same tokenizer queries use
(:func:`~latentsearch.encoders.text.tokenize.tokens`).
"""

from __future__ import annotations

import numpy as np

from latentsearch.errors import EncoderError
from latentsearch.encoders.text.tokenize import char_ngrams, tokens

__all__ = [
    "MAX_VOCAB",
    "NGRAM_MIN_WORDS",
    "NGRAM_WEIGHT",
    "build_vocabulary",
    "subword_composition",
]

#: most frequent words kept in the vocabulary
MAX_VOCAB = 100_000
#: weight of a word's n-gram mean against its own vector (fastText-style composition)
NGRAM_WEIGHT = 2.0
#: n-grams shared by fewer vocabulary words than this carry nothing and are dropped
NGRAM_MIN_WORDS = 2


def _tokenize(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Flat tokens (object array of str) and the row of each token (:func:`tokens`)."""
    toks = [tokens(t) for t in texts]
    flat = np.empty(sum(len(t) for t in toks), dtype=object)
    flat[:] = [w for t in toks for w in t]
    rows = np.repeat(np.arange(len(texts), dtype=np.int64), [len(t) for t in toks])
    return flat, rows


def build_vocabulary(corpus: list[str], weighting: str = "idf"):
    """Vocabulary (every word, most frequent first, ties alphabetical), each text's token ids,
    the (document, id) pairs as ``doc * vocab_size + id``, and the pooling weights (smooth idf
    as scikit-learn's, or ones; 0 for padding and the unknown word)."""
    flat, rows = _tokenize(corpus)
    if flat.size == 0:
        raise EncoderError("no words in the training texts (all empty or punctuation)")
    uniq, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:MAX_VOCAB]
    rank = np.full(len(uniq), -1, dtype=np.int64)
    rank[order] = np.arange(len(order))
    tok = np.where(rank[inverse] >= 0, rank[inverse] + 2, 1)  # 1 = unknown word
    words = [str(w) for w in uniq[order]]
    vocab_size = len(words) + 2
    pairs = np.unique(rows * vocab_size + tok)
    df = np.bincount(pairs % vocab_size, minlength=vocab_size).astype(np.float64)
    n_docs = len(corpus)
    if weighting == "idf":
        weights = np.log((1.0 + n_docs) / (1.0 + df)) + 1.0
    else:
        weights = np.ones(vocab_size)
    weights[:2] = 0.0
    bounds = np.searchsorted(rows, np.arange(n_docs + 1))
    docs = [tok[bounds[i] : bounds[i + 1]] for i in range(n_docs)]
    return words, docs, pairs, weights.astype(np.float32)


def subword_composition(words: list[str], pairs: np.ndarray, vocab_size: int, n_docs: int):
    """The subword composition: which character n-grams each vocabulary word is made of.

    Returns ``(indices, values, n_grams)`` of a sparse (vocab_size, n_grams) matrix ``C``
    (row ``id`` of word ``words[id - 2]``) with ``C[w, g] = NGRAM_WEIGHT * idf(g) / sum of
    idf(g') over the n-grams g' of w``: a word's n-gram part is the idf-weighted mean of its
    n-gram vectors. ``pairs`` holds ``doc * vocab_size + id`` for every (document, word)
    pair; an n-gram's document frequency counts the documents holding any word that holds
    it. Only n-grams shared by at least :data:`NGRAM_MIN_WORDS` words are kept; ``None``
    when no n-gram is.
    """
    index: dict[str, int] = {}
    rows, cols = [], []
    for wi, w in enumerate(words):
        for g in sorted(char_ngrams(w)):
            rows.append(wi + 2)
            cols.append(index.setdefault(g, len(index)))
    if not rows:
        return None
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    keep = np.bincount(cols, minlength=len(index))[cols] >= NGRAM_MIN_WORDS
    rows, cols = rows[keep], cols[keep]
    if rows.size == 0:
        return None
    _, cols = np.unique(cols, return_inverse=True)
    n_grams = int(cols.max()) + 1
    # (document, n-gram) pairs: every n-gram of every word of each document
    starts = np.searchsorted(rows, np.arange(vocab_size + 1))  # rows are ascending
    doc, word = pairs // vocab_size, pairs % vocab_size
    cnt = starts[word + 1] - starts[word]
    first = np.repeat(starts[word], cnt)
    offset = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    dg = np.unique(np.repeat(doc, cnt) * n_grams + cols[first + offset])
    df = np.bincount(dg % n_grams, minlength=n_grams).astype(np.float64)
    idf = np.log((1.0 + n_docs) / (1.0 + df)) + 1.0
    val = idf[cols]
    val = NGRAM_WEIGHT * val / np.bincount(rows, weights=val, minlength=vocab_size)[rows]
    return np.stack([rows, cols], 1), val, n_grams

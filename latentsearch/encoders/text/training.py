"""Training the text encoder: the vocabulary, then word vectors, from scratch or from the prior.

From scratch (``prior=None``): a contrastive objective between two views of the same text,
with in-batch negatives (symmetric InfoNCE, temperature 0.2). Each epoch every training
text gives one pair of views, at random either a contiguous split (the text cut in two at
30-70% of its length) or a random half of its tokens against the other half; the pooled
vector of one view must pick out the other view of the same text among the batch.

Subwords (fastText-style): during training a word's vector is its own row plus
``NGRAM_WEIGHT`` (2) times the idf-weighted mean of the vectors of its character 3-, 4- and
5-grams (only n-grams shared by at least two vocabulary words). So "bushfires", "bushfire"
and "fires" share pieces, and a word seen in one document only is not free to become a mere
identifier of that document. After training the composed vectors are written into the
``Embedding`` layer, so the saved model is the same word-id model as without subwords.

From the prior (``prior="wordnet"``, the default of ``build text``): see
:func:`train_from_prior`. Why the pooled vectors are a sparse bag-of-words product with the
embedding matrix (``sum_w weight(w) * tf_weight * E[w] / total``) rather than the Keras
pooling layer: arithmetically the same, about ten times faster on CPU than materialising
(batch, tokens, dim). The measured variants behind these choices are in
docs/experiments/text.md.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from latentsearch.errors import InvalidInput
from latentsearch.encoders.tf import import_keras, import_tensorflow
from latentsearch.encoders.prior import (
    EXPANSION,
    IDENTITY_DIM,
    KEEP_PRIOR,
    NEW_WORDS_MEET,
    OOV_DIM,
    SHORT,
    THRESHOLD,
    Prior,
    exact_basis,
    identity_matrix,
    neighbours,
    shipped_prior,
)
from latentsearch.encoders.text.model import INIT_STDDEV, build_core
from latentsearch.encoders.text.tokenize import MAX_TOKENS, NGRAMS
from latentsearch.encoders.text.vocabulary import (
    NGRAM_WEIGHT,
    build_vocabulary,
    subword_composition,
)
from latentsearch.progress import bar, say

__all__ = [
    "BATCH_SIZE",
    "DEFAULT_DIM",
    "DEFAULT_PAIRS",
    "LEARNING_RATE",
    "MAX_EPOCHS",
    "MIN_EPOCHS",
    "STANDARDIZE",
    "TEMPERATURE",
    "Trained",
    "train_from_prior",
    "train_from_scratch",
]

#: default vector length: measured best of 32/128/256/512/768/1024 on half-document retrieval
DEFAULT_DIM = 512
#: text pairs seen in a default training run (epochs = this / number of texts, clipped)
DEFAULT_PAIRS = 15_000
MIN_EPOCHS, MAX_EPOCHS = 2, 50
BATCH_SIZE = 512
TEMPERATURE = 0.2
LEARNING_RATE = 0.01
#: the tokenizer, as the encoder's configuration records it
STANDARDIZE = "lowercase; Unicode punctuation/symbols to spaces; whitespace split"


@dataclass
class Trained:
    """What training hands to :class:`TextEncoder`: the arguments of its constructor."""

    words: list[str]
    config: dict[str, Any]
    embeddings: np.ndarray
    token_weights: np.ndarray
    sublinear_tf: bool = True
    core: Any = None
    learned: np.ndarray | None = None
    neighbours: tuple[np.ndarray, np.ndarray] | None = None


class _Progress:
    """Log lines of one training run (debug records when ``quiet``)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __call__(self, msg: str) -> None:
        say(msg, self.quiet)


def _contrastive(docs, weights, sublinear_tf, embeddings, epochs, rng, say, tf, keras,
                 sub=None, grams_zero=False):
    """Contrastive two-view training of ``embeddings`` (a Keras variable), in place.

    With ``sub`` (see :func:`subword_composition`) each word's vector is its own row plus the
    weighted mean of its character n-gram rows; at the end that sum is written into
    ``embeddings``, so the saved model needs no n-gram table.
    """
    n = len(docs)
    vocab_size = len(weights)
    n_batches = math.ceil(n / BATCH_SIZE)
    batch = math.ceil(n / n_batches)  # equal batches: every step has as many negatives

    def bag(views: list[np.ndarray]):
        r, c, v = [], [], []
        for i, t in enumerate(views):
            t = t[t > 1]
            if t.size == 0:
                continue
            u, cnt = np.unique(t, return_counts=True)
            tfw = (1.0 + np.log(cnt)) if sublinear_tf else cnt.astype(np.float64)
            r.append(np.full(u.size, i))
            c.append(u)
            v.append(tfw * weights[u])
        shape = (len(views), vocab_size)
        if not r:
            return tf.SparseTensor(np.zeros((0, 2), np.int64), np.zeros(0, np.float32), shape)
        r, c, v = np.concatenate(r), np.concatenate(c), np.concatenate(v)
        tot = np.bincount(r, weights=v, minlength=len(views))
        v = (v / np.maximum(tot[r], 1e-12)).astype(np.float32)
        return tf.SparseTensor(np.stack([r, c], 1).astype(np.int64), v, shape)

    def views(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if t.size < 2:
            return t, t
        if rng.random() < 0.5:  # contiguous split
            cut = min(max(int(rng.uniform(0.3, 0.7) * t.size), 1), t.size - 1)
            return t[:cut], t[cut:]
        pick = rng.random(t.size) < 0.5  # random halves of the tokens
        return t[pick], t[~pick]

    opt = keras.optimizers.Adam(LEARNING_RATE)
    var = embeddings
    tvars = [var]
    if sub is not None:
        idx, val, n_grams = sub
        compose = tf.sparse.reorder(
            tf.SparseTensor(idx, val.astype(np.float32), (vocab_size, n_grams))
        )
        init = rng.normal(0.0, INIT_STDDEV, (n_grams, int(var.shape[1])))
        if grams_zero:  # starting from a prior: the words begin exactly at its vectors
            init = np.zeros_like(init)
        grams = keras.Variable(init.astype(np.float32), name="ngram_embeddings")
        tvars.append(grams)

    def table():
        if sub is None:
            return var.value
        return var.value + tf.sparse.sparse_dense_matmul(compose, grams.value)

    def info_nce(va, vb):
        logits = tf.matmul(va, vb, transpose_b=True) / TEMPERATURE
        y = tf.range(tf.shape(logits)[0])
        xent = tf.nn.sparse_softmax_cross_entropy_with_logits
        return 0.5 * (
            tf.reduce_mean(xent(y, logits)) + tf.reduce_mean(xent(y, tf.transpose(logits)))
        )

    @tf.function(reduce_retracing=True)
    def step(a, b):
        with tf.GradientTape() as tape:
            w = table()
            va = tf.math.l2_normalize(tf.sparse.sparse_dense_matmul(a, w), -1)
            vb = tf.math.l2_normalize(tf.sparse.sparse_dense_matmul(b, w), -1)
            loss = info_nce(va, vb)
        grads = tape.gradient(loss, [v.value for v in tvars])
        opt.apply_gradients(zip(grads, tvars))
        return loss

    loss = float("nan")
    steps = 0
    epochs_bar = bar(range(1, epochs + 1), desc="text encoder", unit="epoch", quiet=say.quiet)
    for epoch in epochs_bar:
        t0 = time.perf_counter()
        perm = rng.permutation(n)
        losses = []
        for start in range(0, n, batch):
            idx = perm[start : start + batch]
            if idx.size < 2:
                continue
            pairs = [views(docs[i]) for i in idx]
            a, b = bag([p[0] for p in pairs]), bag([p[1] for p in pairs])
            losses.append(float(step(a, b)))
            steps += 1
        loss = float(np.mean(losses)) if losses else float("nan")
        secs = time.perf_counter() - t0
        say(f"text encoder: epoch {epoch}/{epochs} loss {loss:.4f} ({secs:.2f} s)")
        epochs_bar.set_postfix(loss=f"{loss:.4f}")
    if sub is not None:
        var.assign(table())  # bake the n-gram part into the word vectors
    return loss, steps


def _report(
    *,
    dim: int,
    vocab_size: int,
    weighting: str,
    sublinear_tf: bool,
    prior_part: dict[str, Any],
    objective: str,
    subwords: str,
    epochs: int,
    steps: int,
    final_loss: float | None,
    seconds: float,
    texts: list[str],
    extra: list[str],
    seed: int,
) -> dict[str, Any]:
    """The encoder's configuration and training figures (stored in the manifest); the
    prior's settings, when there is one, sit between the tokenizer and the objective."""
    return {
        "dim": dim,
        "max_tokens": MAX_TOKENS,
        "vocab_size": vocab_size,
        "weighting": weighting,
        "sublinear_tf": bool(sublinear_tf),
        "standardize": STANDARDIZE,
        **prior_part,
        "objective": objective,
        "subwords": subwords,
        "temperature": TEMPERATURE,
        "batch_size": BATCH_SIZE,
        "epochs": epochs,
        "steps": steps,
        "final_loss": None if final_loss is None else round(float(final_loss), 6),
        "train_seconds": round(seconds, 3),
        "train_texts": len(texts),
        "extra_texts": len(extra),
        "seed": int(seed),
    }


def _default_epochs(n_docs: int) -> int:
    """Epochs of a default run: about :data:`DEFAULT_PAIRS` text pairs, clipped."""
    return int(np.clip(math.ceil(DEFAULT_PAIRS / n_docs), MIN_EPOCHS, MAX_EPOCHS))


def train_from_scratch(
    texts: list[str],
    extra: list[str],
    *,
    dim: int,
    epochs: int | None,
    seed: int,
    quiet: bool,
    weighting: str,
    sublinear_tf: bool,
    train: bool,
    subwords: bool,
) -> Trained:
    """Vocabulary and idf from ``texts + extra``, then word vectors by contrastive training
    (``train=False``: the random initial ones; ``subwords=False``: no character n-grams)."""
    say = _Progress(quiet)
    t0 = time.perf_counter()
    tf = import_tensorflow()  # quietly, whoever calls fit
    keras = import_keras()
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)

    corpus = texts + extra
    words, docs, pairs, weights = build_vocabulary(corpus, weighting)
    vocab_size = len(words) + 2
    n_docs = len(corpus)

    core = build_core(vocab_size, dim, sublinear_tf)
    emb_layer = core.get_layer("embedding")
    core.get_layer("pooling").token_weights.assign(weights)

    if epochs is None:
        epochs = _default_epochs(n_docs)
    epochs = int(epochs)
    final_loss = None
    steps = 0
    sub = subword_composition(words, pairs, vocab_size, n_docs) if subwords and train else None
    if train and n_docs >= 2:
        final_loss, steps = _contrastive(
            docs, weights, sublinear_tf, emb_layer.embeddings, epochs, rng, say, tf, keras, sub,
        )
    elif train:
        say("text encoder: one text only, nothing to contrast; embeddings left random")
    seconds = time.perf_counter() - t0
    cfg = _report(
        dim=dim,
        vocab_size=vocab_size,
        weighting=weighting,
        sublinear_tf=sublinear_tf,
        prior_part={},
        objective=(
            "contrastive two-view InfoNCE, in-batch negatives" if train else "none (random)"
        ),
        subwords=(
            f"char {min(NGRAMS)}-{max(NGRAMS)}-grams x {NGRAM_WEIGHT}, {sub[2]} n-grams"
            if sub is not None
            else "none"
        ),
        epochs=epochs if train else 0,
        steps=steps,
        final_loss=final_loss,
        seconds=seconds,
        texts=texts,
        extra=extra,
        seed=seed,
    )
    if not quiet:
        say(
            f"text encoder: {vocab_size - 2} words, dim {dim}, {cfg['epochs']} epochs, "
            f"loss {cfg['final_loss']}, {seconds:.1f} s"
        )
    return Trained(
        words,
        cfg,
        embeddings=np.asarray(emb_layer.embeddings),
        token_weights=np.asarray(core.get_layer("pooling").token_weights),
        sublinear_tf=sublinear_tf,
        core=core,
    )


def train_from_prior(
    texts: list[str],
    extra: list[str],
    prior: Prior | str,
    *,
    dim: int | None,
    epochs: int | None,
    seed: int,
    quiet: bool,
    train: bool,
) -> Trained:
    """The default ``build text``: word vectors from the prior, adapted to the collection.

    1. Vocabulary and idf from the collection's texts (as without a prior).
    2. Each word's prior vector (its lemma's, via WordNet's forms), and for the words the
       prior lacks a random start; then the contrastive training on the collection
       (character n-grams, starting at zero, give the collection's own words subword
       vectors): the adaptation (``train=False`` skips it).
    3. Each word's direction: an identity part, so idf pooling ranks as TF-IDF cosine does,
       plus its near words' identities (adapted prior cosine above ``THRESHOLD``), so
       "slice" meets "cut". The identity is exact (an orthonormal basis of the collection's
       TF-IDF rows, plus ``OOV_DIM`` dimensions for words met later) when the collection has
       at most ``(dim - OOV_DIM) / 2`` texts, else a fixed random direction per word in
       ``dim`` (default :data:`IDENTITY_DIM`).
    """
    say = _Progress(quiet)
    t0 = time.perf_counter()
    if isinstance(prior, str):
        if prior != "wordnet":
            raise InvalidInput(f"prior must be 'wordnet' or none, got {prior!r}")
        prior = shipped_prior()
    if not isinstance(prior, Prior):
        raise InvalidInput(f"prior must be 'wordnet', a Prior or None, not {type(prior).__name__}")
    dim = IDENTITY_DIM if dim is None else int(dim)
    corpus = texts + extra
    words, docs, pairs, weights = build_vocabulary(corpus)
    vocab_size, n_docs = len(words) + 2, len(corpus)
    rows = np.array([-1, -1] + [prior.row(w) for w in words], dtype=np.int64)
    has = rows >= 0
    rng = np.random.default_rng(seed)
    learned = rng.normal(0.0, 1.0 / math.sqrt(prior.dim), (vocab_size, prior.dim))
    learned[has] = prior.vectors[rows[has]].astype(np.float64)
    learned[:2] = 0.0
    learned = learned.astype(np.float32)
    steps, final_loss, n_epochs = 0, None, 0
    if train and n_docs >= 2:
        tf = import_tensorflow()
        keras = import_keras()
        keras.utils.set_random_seed(seed)
        n_epochs = int(epochs) if epochs is not None else _default_epochs(n_docs)
        var = keras.Variable(learned, name="adapted_prior")
        sub = subword_composition(words, pairs, vocab_size, n_docs)
        final_loss, steps = _contrastive(docs, weights, True, var, n_epochs, rng, say, tf, keras,
                                         sub, grams_zero=True)
        adapted = np.asarray(var.numpy(), dtype=np.float32)
        if KEEP_PRIOR:
            adapted[has] = learned[has]
        learned = adapted
        learned[:2] = 0.0
    usable = has.copy()
    if NEW_WORDS_MEET and steps:
        usable[2:] = True
    nb, wt = neighbours(learned, usable)
    if 2 * n_docs + OOV_DIM <= dim:
        scheme = "exact"
        basis = exact_basis(docs, weights, True, nb, wt)
        base_norm = float(np.mean(np.linalg.norm(basis[2:], axis=1))) if vocab_size > 2 else 1.0
        emb = np.hstack([basis, np.zeros((vocab_size, OOV_DIM))]).astype(np.float32)
        oov_dims = OOV_DIM
    else:
        scheme = "random"
        emb = np.zeros((vocab_size, dim), np.float32)
        emb[2:] = identity_matrix(words, dim)
        base_norm, oov_dims = 1.0, 0
    emb[:2] = 0.0
    seconds = time.perf_counter() - t0
    prior_part = {
        "prior": "wordnet-3.0",
        "prior_sha256": prior.digest,
        "prior_words": int(has.sum()),
        "identity": scheme,
        "oov_dims": oov_dims,
        "oov_scale": round(base_norm, 6),
        "unknown_weight": float(math.log(1.0 + n_docs) + 1.0),
        "neighbours": int(nb.shape[1]),
        "threshold": float(THRESHOLD),
        "expansion": float(EXPANSION),
        "short": float(SHORT),
    }
    cfg = _report(
        dim=int(emb.shape[1]),
        vocab_size=vocab_size,
        weighting="idf",
        sublinear_tf=True,
        prior_part=prior_part,
        objective=("contrastive two-view InfoNCE from the prior, in-batch negatives"
                   if steps else "none (prior as shipped)"),
        subwords=f"char {min(NGRAMS)}-{max(NGRAMS)}-grams x {NGRAM_WEIGHT}" if steps else "none",
        epochs=n_epochs,
        steps=steps,
        final_loss=final_loss,
        seconds=seconds,
        texts=texts,
        extra=extra,
        seed=seed,
    )
    say(f"text encoder: {vocab_size - 2} words ({int(has.sum())} in the prior), {scheme} "
        f"identity, dim {cfg['dim']}, {n_epochs} adaptation epochs, {seconds:.1f} s")
    return Trained(words, cfg, embeddings=emb, token_weights=weights, sublinear_tf=True,
                   learned=learned.astype(np.float16), neighbours=(nb, wt))

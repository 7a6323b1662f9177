"""The ``text`` encoder: pooled word embeddings learned from the collection's own text.

Pipeline (one Keras model, :attr:`TextEncoder.keras_model`)::

    str --TextVectorization--> token ids --TruncateTokens(512)--> Embedding(mask_zero=True)
        --WeightedTokenPooling (idf x sublinear tf, padding and unknown words weigh 0)
        --UnitNormalization--> float32 (dim,)

Tokens: lower-cased (Unicode aware), every Unicode punctuation or symbol character replaced
by a space, split on whitespace. So ``"South-West"`` gives ``south west`` and
``"Zürich café"`` gives ``zürich café``; scripts written without spaces (Chinese, Japanese)
give one token per run of characters. Only the first :data:`MAX_TOKENS` (512) tokens of an
item are encoded; the rest is ignored (the built-in news articles have at most 620 words,
median 162). Index 0 is padding and index 1 the unknown word; both weigh zero in the pooling,
and an item with no known word at all is refused with :class:`EncoderError` rather than
encoded as a meaningless zero vector.

Training (unsupervised, :meth:`TextEncoder.fit`): a contrastive objective between two views
of the same text, with in-batch negatives (symmetric InfoNCE, temperature 0.2). Each epoch
every training text gives one pair of views, at random either a contiguous split (the text
cut in two at 30-70% of its length) or a random half of its tokens against the other half.
The pooled vector of one view must pick out the other view of the same text among the
batch.

Subwords (fastText-style): during training a word's vector is its own row plus
``NGRAM_WEIGHT`` (2) times the idf-weighted mean of the vectors of its character 3-, 4- and
5-grams (with ``<``/``>`` word boundary marks; only n-grams shared by at least two
vocabulary words, each weighted by its own document frequency). So "bushfires", "bushfire"
and "fires" share pieces and a word seen in one document only is not free to become a mere
identifier of that document. After training the composed vectors are written into the
``Embedding`` layer, so the saved model is the same word-id model as without subwords (no
n-gram table is stored). A word absent from the vocabulary is still ignored at encoding.

Chosen by measurement (benchmarks/text.py protocol: news articles split in halves, trained
on the 300 second halves, first halves query; recall@1 / recall@10, exact cosine; mean of
seeds 0,1,2 unless noted; the last column is how many of the top 5 for "bushfires near
Sydney" are about fires, encoder trained on the 300 whole articles, seed 0):

    variant                                                     r@1 / r@10     fires
    subwords 3-5 x2, temperature 0.2, dim 512 (default; 0-4)    0.507 / 0.910  5/5
      (seeds 0-4: r@1 .507 .513 .503 .507 .507, r@10 .903 .920 .913 .907 .910)
    no subwords, temperature 0.1 (the previous default)         0.489 / 0.909  3/5
    subwords x1, temperature 0.1                                0.504 / 0.912  3/5
    subwords x0.5; x2 (temperature 0.1)                         0.502 / 0.914; 0.509 / 0.914
    subwords x1, temperature 0.05; 0.2; 0.3; 0.5                0.490 / 0.857; 0.502 / 0.914;
                                                                0.483 / 0.910; 0.469 / 0.891
    subwords, temperature 0.2, dim 1024 (seeds 0-4)             0.501 / 0.909  5/5
    20 / 80 / 100 epochs instead of 50                          0.49-0.51 / 0.86-0.91
    a quarter / half of the dimensions a fixed random projection  0.498 / 0.913; 0.489 / 0.910
    L2 pull towards the initial (random) vectors, 1e-3          0.456 / 0.857
    smaller steps for words in few documents (lr x (df/3)^0.5,
      seeds 0-4)                                                0.495 / 0.913  5/5
    loss averaged over temperatures 0.1 and 0.3                 0.504 / 0.912  5/5
    two view pairs per text per step; contiguous views only     0.503 / 0.914; 0.507 / 0.914
    overlapping views (each keeps 60% of the tokens)            0.504 / 0.907
    averaging the vectors over the last half of the epochs      0.504 / 0.914
    no subwords, plain mean pooling (temperature 0.1)           0.49 / 0.88
    SIF weights (a=1e-3), with or without PC (temperature 0.1)  0.47-0.49 / 0.86-0.88
    dim 32; 128; 256; 768 (no subwords, temperature 0.1)        0.38 / 0.66; 0.47 / 0.83;
                                                                0.50 / 0.86; 0.49 / 0.90
    skip-gram with negative sampling (window 5, 10 epochs, 67 s)  0.24 / 0.67
    untrained random embeddings, idf pooling; plain mean        0.47 / 0.78; 0.14 / 0.39
    TF-IDF cosine (the target)                                  0.507 / 0.923
    TF-IDF on words plus character 3-5-grams; on words plus word bigrams  0.51 / 0.92; 0.48 / 0.89

Seeds move these figures by about +-0.015. The default matches TF-IDF on recall@1 and is
about 0.01 below it on recall@10 (the halves of an article share few words: bag-of-words
methods all sit near 0.5 / 0.92 here). The higher temperature weighs other documents on
the same topic less as negatives, so the vectors keep more of the topic: with 0.1, a short
query such as "bushfires near Sydney" ranked Sydney cricket and yachting articles among the
fires. Skip-gram makes co-occurring words alike, which blurs exactly the rare, distinctive
words that identify a document. SIF's common-component removal did not help after
training; idf weights with sublinear term frequency beat SIF weights.

Training computes the pooled vectors as a sparse bag-of-words product with the embedding
matrix (``sum_w weight(w) * tf_weight * E[w] / total``), which is arithmetically the same
as the Keras pooling layer but about ten times faster than materialising (batch, tokens, dim)
on CPU; the learned matrix is then the weights of the model's ``Embedding`` layer.

Persistence: ``model.keras`` holds the token-id model (truncation, embedding, pooling,
normalisation, and the per-token pooling weights as a non-trainable weight) and is loaded
with ``safe_mode=True``; ``vocab.json`` holds the vocabulary. The ``TextVectorization``
layer is *not* saved inside the .keras file but rebuilt from ``vocab.json`` on load: its
lookup table is a TensorFlow resource whose serialisation has changed between Keras
versions, and a custom (non-serialisable) standardize function is needed for Unicode-aware
lower-casing.
The vocabulary as plain JSON stays readable and checksummable by the manifest.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import EncoderError, InvalidInput
from ._base import Encoder

#: tokens per item that are encoded; the rest of a longer item is ignored (documented)
MAX_TOKENS = 512
#: most frequent words kept in the vocabulary
MAX_VOCAB = 100_000
#: default vector length: measured best of 32/128/256/512/768/1024 on half-document retrieval
DEFAULT_DIM = 512
#: text pairs seen in a default training run (epochs = this / number of texts, clipped)
DEFAULT_PAIRS = 15_000
MIN_EPOCHS, MAX_EPOCHS = 2, 50
BATCH_SIZE = 512
#: padded token slots per encoding call (memory: slots x dim x 4 bytes, 128 MiB at dim 512)
TOKEN_BUDGET = 65_536
TEMPERATURE = 0.2
LEARNING_RATE = 0.01
INIT_STDDEV = 0.1
#: Unicode punctuation (P*) and symbols (S*) become spaces (RE2 syntax)
_PUNCT = r"[\pP\pS]+"
_PREVIEW = 60
#: character n-gram lengths of the subword part (words get ``<`` and ``>`` boundary marks)
NGRAMS = (3, 4, 5)
#: weight of a word's n-gram mean against its own vector (fastText-style composition)
NGRAM_WEIGHT = 2.0
#: n-grams shared by fewer vocabulary words than this carry nothing and are dropped
NGRAM_MIN_WORDS = 2


def _standardize(x):
    """Lower-case (UTF-8 aware) and turn punctuation and symbols into spaces."""
    import tensorflow as tf

    return tf.strings.regex_replace(tf.strings.lower(x, encoding="utf-8"), _PUNCT, " ")


def _preview(text: str) -> str:
    return repr(text if len(text) <= _PREVIEW else text[:_PREVIEW] + "...")


_LAYERS: dict[str, Any] = {}


def _layers() -> dict[str, Any]:
    """Define (once) and register the custom Keras layers; imports Keras lazily."""
    if _LAYERS:
        return _LAYERS
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="latentsearch")
    class TruncateTokens(keras.layers.Layer):
        """Keep the first ``max_tokens`` token ids of each row."""

        def __init__(self, max_tokens: int = MAX_TOKENS, **kwargs):
            super().__init__(**kwargs)
            self.max_tokens = int(max_tokens)

        def call(self, ids):
            return ids[:, : self.max_tokens]

        def compute_output_shape(self, input_shape):
            n = input_shape[1]
            return (input_shape[0], None if n is None else min(n, self.max_tokens))

        def get_config(self):
            return {**super().get_config(), "max_tokens": self.max_tokens}

    @keras.saving.register_keras_serializable(package="latentsearch")
    class WeightedTokenPooling(keras.layers.Layer):
        """Mask-aware weighted mean of token embeddings.

        Inputs ``[ids, embedded]``; each position weighs ``token_weights[id]`` (0 for
        padding and the unknown word, and for positions the mask excludes), times
        ``(1 + log tf) / tf`` when ``sublinear_tf`` (tf = count of that id in the row, so a
        word repeated n times weighs 1 + log n in total). Outputs the pooled vector and
        the number of known tokens of each row.
        """

        def __init__(self, vocab_size: int, sublinear_tf: bool = True, **kwargs):
            super().__init__(**kwargs)
            self.vocab_size = int(vocab_size)
            self.sublinear_tf = bool(sublinear_tf)
            self.supports_masking = True

        def build(self, input_shape):
            self.token_weights = self.add_weight(
                name="token_weights",
                shape=(self.vocab_size,),
                initializer="ones",
                trainable=False,
            )

        def call(self, inputs, mask=None):
            ids, emb = inputs
            known = ops.cast(ops.greater(ids, 1), emb.dtype)
            if isinstance(mask, (list, tuple)):
                mask = mask[1]
            if mask is not None:
                known = known * ops.cast(mask, emb.dtype)
            w = ops.take(self.token_weights, ids, axis=0) * known
            if self.sublinear_tf:
                same = ops.cast(ops.equal(ids[:, :, None], ids[:, None, :]), emb.dtype)
                tf_ = ops.maximum(ops.sum(same, axis=-1), 1.0)
                w = w * (1.0 + ops.log(tf_)) / tf_
            total = ops.maximum(ops.sum(w, axis=1, keepdims=True), 1e-12)
            pooled = ops.einsum("bl,bld->bd", w, emb) / total
            return pooled, ops.sum(known, axis=1)

        def compute_mask(self, inputs, mask=None):
            return None

        def compute_output_shape(self, input_shape):
            ids_shape, emb_shape = input_shape
            return (emb_shape[0], emb_shape[-1]), (emb_shape[0],)

        def get_config(self):
            return {
                **super().get_config(),
                "vocab_size": self.vocab_size,
                "sublinear_tf": self.sublinear_tf,
            }

    _LAYERS.update(TruncateTokens=TruncateTokens, WeightedTokenPooling=WeightedTokenPooling)
    return _LAYERS


def _build_core(vocab_size: int, dim: int, sublinear_tf: bool):
    """The saved model: token ids (batch, tokens) -> [unit vector (batch, dim), known count]."""
    import keras

    layers = _layers()
    ids = keras.Input(shape=(None,), dtype="int64", name="token_ids")
    cut = layers["TruncateTokens"](MAX_TOKENS, name="truncate")(ids)
    emb = keras.layers.Embedding(
        vocab_size,
        dim,
        mask_zero=True,
        embeddings_initializer=keras.initializers.RandomNormal(stddev=INIT_STDDEV),
        name="embedding",
    )(cut)
    pooled, known = layers["WeightedTokenPooling"](
        vocab_size, sublinear_tf=sublinear_tf, name="pooling"
    )([cut, emb])
    vec = keras.layers.UnitNormalization(name="normalize")(pooled)
    return keras.Model(ids, [vec, known], name="text_encoder_core")


def _vectorizer(words: list[str]):
    import keras

    return keras.layers.TextVectorization(
        standardize=_standardize,
        split="whitespace",
        output_mode="int",
        vocabulary=words if words else None,
        name="vectorize",
    )


def _full_model(vectorizer, core):
    """Strings (batch,) -> [vectors, known counts]: the one model ``encode`` calls."""
    import keras

    text = keras.Input(shape=(1,), dtype="string", name="text")
    ids = vectorizer(text)
    vec, known = core(ids)
    return keras.Model(text, [vec, known], name="text_encoder")


def _tokenize(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Flat token bytes and the row of each token, with the encoder's own standardisation."""
    import tensorflow as tf

    rag = tf.strings.split(_standardize(tf.constant(texts, dtype=tf.string)))
    return rag.flat_values.numpy(), rag.value_rowids().numpy()


def _check_texts(texts: Any, what: str) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    try:
        texts = list(texts)
    except TypeError:
        raise InvalidInput(f"{what} must be a string or a list of strings") from None
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidInput(
                f"{what} must be strings; item {i} is {type(t).__name__}"
            )
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"text {i} is not valid Unicode (lone surrogate)") from None
    return texts


def _subwords(words: list[str], pairs: np.ndarray, vocab_size: int, n_docs: int):
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
        b = "<" + w + ">"
        grams = {b[i : i + n] for n in NGRAMS for i in range(len(b) - n + 1)} - {b}
        for g in sorted(grams):
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


class _Progress:
    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)


class TextEncoder(Encoder):
    """Sentences and short documents -> unit-length pooled word-embedding vectors."""

    name = "text"
    modality = "text"

    def __init__(self, vectorizer, core, words: list[str], cfg: dict[str, Any]):
        self._vectorizer = vectorizer
        self._core = core
        self._words = list(words)
        self._cfg = dict(cfg)
        self._model = _full_model(vectorizer, core)

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return int(self._cfg["dim"])

    @property
    def vocabulary(self) -> list[str]:
        """Known words, in id order from 2 (0 is padding, 1 the unknown word)."""
        return list(self._words)

    @property
    def keras_model(self):
        """The Keras model ``encode`` calls: string tensor (n, 1) -> [vectors, known counts]."""
        return self._model

    def config(self) -> dict[str, Any]:
        return dict(self._cfg)

    # ------------------------------------------------------------------ training
    @classmethod
    def fit(
        cls,
        texts: list[str],
        *,
        dim: int | None = None,
        epochs: int | None = None,
        seed: int = 0,
        quiet: bool = False,
        extra_texts: list[str] | None = None,
        weighting: str = "idf",
        sublinear_tf: bool = True,
        train: bool = True,
        subwords: bool = True,
    ) -> "TextEncoder":
        """Learn the vocabulary and the embeddings from ``texts`` (+ ``extra_texts``).

        ``weighting`` ("idf" default, or "mean") and ``sublinear_tf`` select the pooling,
        ``train=False`` keeps the random initial embeddings, ``subwords=False`` trains the
        word vectors without character n-grams; these exist for the benchmark.
        """
        texts = _check_texts(texts, "texts")
        extra = _check_texts(extra_texts or [], "extra texts")
        dim = DEFAULT_DIM if dim is None else int(dim)
        if dim < 1:
            raise InvalidInput(f"dim must be a positive integer, got {dim}")
        if epochs is not None and int(epochs) < 1:
            raise InvalidInput(f"epochs must be a positive integer, got {epochs}")
        if weighting not in ("idf", "mean"):
            raise InvalidInput(f"weighting must be 'idf' or 'mean', got {weighting!r}")
        corpus = texts + extra
        if not corpus:
            raise InvalidInput("no texts to train the text encoder on")
        say = _Progress(quiet)
        t0 = time.perf_counter()

        import keras
        import tensorflow as tf

        keras.utils.set_random_seed(seed)
        rng = np.random.default_rng(seed)

        # vocabulary: every word of the corpus, most frequent first (ties alphabetical)
        flat, rows = _tokenize(corpus)
        if flat.size == 0:
            raise EncoderError("no words in the training texts (all empty or punctuation)")
        uniq, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
        order = np.argsort(-counts, kind="stable")[:MAX_VOCAB]
        rank = np.full(len(uniq), -1, dtype=np.int64)
        rank[order] = np.arange(len(order))
        tok = np.where(rank[inverse] >= 0, rank[inverse] + 2, 1)  # 1 = unknown word
        words = [w.decode("utf-8") for w in uniq[order]]
        vocab_size = len(words) + 2
        # document frequency -> smooth idf (as scikit-learn's), 0 for padding/unknown
        pairs = np.unique(rows * vocab_size + tok)
        df = np.bincount(pairs % vocab_size, minlength=vocab_size).astype(np.float64)
        n_docs = len(corpus)
        if weighting == "idf":
            weights = np.log((1.0 + n_docs) / (1.0 + df)) + 1.0
        else:
            weights = np.ones(vocab_size)
        weights[:2] = 0.0
        weights = weights.astype(np.float32)

        core = _build_core(vocab_size, dim, sublinear_tf)
        emb_layer = core.get_layer("embedding")
        core.get_layer("pooling").token_weights.assign(weights)

        bounds = np.searchsorted(rows, np.arange(n_docs + 1))
        docs = [tok[bounds[i] : bounds[i + 1]] for i in range(n_docs)]
        if epochs is None:
            epochs = int(np.clip(math.ceil(DEFAULT_PAIRS / n_docs), MIN_EPOCHS, MAX_EPOCHS))
        epochs = int(epochs)
        final_loss = None
        steps = 0
        sub = _subwords(words, pairs, vocab_size, n_docs) if subwords and train else None
        if train and n_docs >= 2:
            final_loss, steps = cls._train(
                docs, weights, sublinear_tf, emb_layer.embeddings, epochs, rng, say, tf, keras,
                sub,
            )
        elif train:
            say("text encoder: one text only, nothing to contrast; embeddings left random")
        seconds = time.perf_counter() - t0
        cfg = {
            "dim": dim,
            "max_tokens": MAX_TOKENS,
            "vocab_size": vocab_size,
            "weighting": weighting,
            "sublinear_tf": bool(sublinear_tf),
            "standardize": "lowercase; Unicode punctuation/symbols to spaces; whitespace split",
            "objective": (
                "contrastive two-view InfoNCE, in-batch negatives" if train else "none (random)"
            ),
            "subwords": (
                f"char {min(NGRAMS)}-{max(NGRAMS)}-grams x {NGRAM_WEIGHT}, {sub[2]} n-grams"
                if sub is not None
                else "none"
            ),
            "temperature": TEMPERATURE,
            "batch_size": BATCH_SIZE,
            "epochs": epochs if train else 0,
            "steps": steps,
            "final_loss": None if final_loss is None else round(float(final_loss), 6),
            "train_seconds": round(seconds, 3),
            "train_texts": len(texts),
            "extra_texts": len(extra),
            "seed": int(seed),
        }
        if not quiet:
            say(
                f"text encoder: {vocab_size - 2} words, dim {dim}, {cfg['epochs']} epochs, "
                f"loss {cfg['final_loss']}, {seconds:.1f} s"
            )
        return cls(_vectorizer(words), core, words, cfg)

    @staticmethod
    def _train(docs, weights, sublinear_tf, embeddings, epochs, rng, say, tf, keras, sub=None):
        """Contrastive two-view training of ``embeddings`` (a Keras variable), in place.

        With ``sub`` (see :func:`_subwords`) each word's vector is its own row plus the
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
        for epoch in range(1, epochs + 1):
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
        if sub is not None:
            var.assign(table())  # bake the n-gram part into the word vectors
        return loss, steps

    # ------------------------------------------------------------------ encoding
    def encode(self, items: Any, *, max_batch: int = 1024) -> np.ndarray:
        """float32 (n, dim) unit vectors; a str is one item. Refuses items with no known word.

        Items are encoded in chunks of similar length (sorted by an estimate of their token
        count), each holding at most ``TOKEN_BUDGET`` padded token slots and ``max_batch``
        items: memory stays bounded for long documents and little time goes to padding.
        """
        single = isinstance(items, str)
        texts = _check_texts(items, "text items")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            if not t.strip():
                where = "query" if single else f"text {i}"
                raise EncoderError(f"{where} is empty: nothing to encode")
        import tensorflow as tf

        n = len(texts)
        out = np.empty((n, self.dim), dtype=np.float32)
        known = np.empty(n, dtype=np.float32)
        est = np.minimum([len(t.split()) + 1 for t in texts], MAX_TOKENS)
        order = np.argsort(est, kind="stable")
        start = 0
        while start < n:
            stop = start + 1
            while (
                stop < n
                and stop - start < max_batch
                and (stop - start + 1) * est[order[stop]] <= TOKEN_BUDGET
            ):
                stop += 1
            idx = order[start:stop]
            chunk = tf.constant([texts[i] for i in idx], dtype=tf.string)[:, None]
            vec, cnt = self._model(chunk, training=False)
            out[idx] = np.asarray(vec)
            known[idx] = np.asarray(cnt)
            start = stop
        if not known.all():
            j = int(np.flatnonzero(known == 0)[0])
            where = f"query {_preview(texts[j])}" if single else f"text {j} ({_preview(texts[j])})"
            raise EncoderError(
                f"no known words in {where}: none of its words is in the encoder's "
                f"vocabulary of {len(self._words)} words"
            )
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, folder: Path) -> list[str]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._core.save(folder / "model.keras")
        with open(folder / "vocab.json", "w", encoding="utf-8") as fh:
            json.dump(self._words, fh, ensure_ascii=False)
        return ["model.keras", "vocab.json"]

    @classmethod
    def load(cls, folder: Path, config: dict[str, Any]) -> "TextEncoder":
        import keras

        folder = Path(folder)
        _layers()
        try:
            core = keras.saving.load_model(folder / "model.keras", safe_mode=True, compile=False)
            with open(folder / "vocab.json", encoding="utf-8") as fh:
                words = json.load(fh)
        except (OSError, ValueError) as exc:
            raise EncoderError(f"cannot load the text encoder from {folder}: {exc}") from None
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise EncoderError(f"{folder / 'vocab.json'} is not a list of words")
        if len(words) + 2 != int(core.get_layer("embedding").input_dim):
            raise EncoderError(
                f"vocab.json has {len(words)} words but the model expects "
                f"{core.get_layer('embedding').input_dim - 2}"
            )
        cfg = dict(config)
        cfg.setdefault("dim", int(core.get_layer("embedding").output_dim))
        return cls(_vectorizer(words), core, words, cfg)

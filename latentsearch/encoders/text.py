"""The ``text`` encoder: pooled word embeddings, from the WordNet prior or the collection alone.

Pipeline (one Keras model, :attr:`TextEncoder.keras_model`; ``encode`` runs the same steps in
numpy, see "Inference without TensorFlow" below)::

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

The measured variants behind these choices (about 75, issue 4) are in
docs/experiments/text.md.

Starting from the prior (``fit(prior="wordnet")``, the default of ``build text``; see
:mod:`._prior` and :func:`_fit_prior`): each word's vector is an identity part (a fixed
direction per word: idf pooling of those ranks as TF-IDF cosine does; for a collection of
at most ``(dim - 256) / 2`` texts an orthonormal basis of its TF-IDF rows, so exactly)
plus, weighted down in long texts, the identity parts of its near words by the WordNet
prior (adapted to the collection for the words the prior lacks). Words outside the
vocabulary keep a direction of their own and weigh the largest idf, and reach their near
vocabulary words by the prior or else by shared character n-grams, so words that ``add``
brings are not dropped; an item none of whose words the vocabulary or the prior knows is
refused. The Keras model of such an encoder is its identity part only; ``encode`` is numpy.

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

Inference without TensorFlow: ``save`` also writes ``inference.npz`` (``np.savez``, no
pickled objects, read with ``allow_pickle=False``): the ``Embedding`` matrix
``embeddings`` float32 (vocab, dim), the pooling's ``token_weights`` float32 (vocab,) and
``sublinear_tf``; started from a prior also ``learned`` float16 (vocab, prior dim) and the
synonym lists ``neighbours`` int64 / ``neighbour_weights`` float32 (vocab, 10). (Chosen over reading the arrays out of ``model.keras`` with zipfile +
h5py: that layout is Keras-internal and has changed between versions.) ``load`` reads only
``vocab.json`` and ``inference.npz`` and never imports TensorFlow or Keras; ``encode``
always runs the same numpy path (:func:`tokens` + :meth:`TextEncoder._pool`), right after
``fit`` as after ``load``, so the vectors of a build and of later queries come from
identical code. The Keras model stays available as :attr:`TextEncoder.keras_model`
(``model.keras`` loaded lazily, ``safe_mode=True``); tests check the two agree within 1e-5.
A collection saved before ``inference.npz`` existed is loaded through Keras once.

The numpy tokenizer reproduces TextVectorization with ``_standardize`` exactly (checked
against TensorFlow on every code point): Python's ``str.lower`` (which, like TF/ICU, does the
full mapping ``İ`` -> ``i̇`` and the Greek final sigma), except for the characters listed in
``_TF_KEEPS_CASE`` (Unicode 14 additions TensorFlow's ICU does not lower); every code point
of category P* or S* (plus ``_TF_EXTRA_PUNCT``, Unicode 15 additions that RE2 knows and
this Python's ``unicodedata`` may not) becomes a space; TensorFlow's lower-casing ends the
text at its first NUL character, so does this; the split is on ASCII whitespace only
(`` \t\n\v\f\r``: TF does not split on U+00A0, U+3000, U+2028 ... which Python's
``str.split`` would).
"""

from __future__ import annotations

import json
import math
import re
import sys
import unicodedata
import zipfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.errors import EncoderError, InvalidInput
from latentsearch.encoders.tf import import_keras, import_tensorflow
from latentsearch.encoders.base import Encoder
from latentsearch.encoders import prior as _prior
from latentsearch.encoders.prior import Prior

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
    tf = import_tensorflow()
    return tf.strings.regex_replace(tf.strings.lower(x, encoding="utf-8"), _PUNCT, " ")


def _ranges(*spans) -> frozenset[int]:
    out: set[int] = set()
    for a, b in spans:
        out.update(range(a, b + 1))
    return frozenset(out)


#: characters Python lower-cases but TensorFlow's ICU (Unicode 13 case tables) leaves as is
_TF_KEEPS_CASE = _ranges(
    (0x2C2F, 0x2C2F), (0xA7C0, 0xA7C0), (0xA7D0, 0xA7D0), (0xA7D6, 0xA7D6),
    (0xA7D8, 0xA7D8), (0x10570, 0x1057A), (0x1057C, 0x1058A), (0x1058C, 0x10592),
    (0x10594, 0x10595),
)
_KEEP_CASE_RE = re.compile("([" + "".join(chr(c) for c in sorted(_TF_KEEPS_CASE)) + "])")
#: punctuation/symbols in RE2's Unicode 15 tables, unassigned in Python 3.11's Unicode 14
_TF_EXTRA_PUNCT = _ranges(
    (0x11B00, 0x11B09), (0x11F43, 0x11F4F), (0x1F6DC, 0x1F6DC), (0x1F774, 0x1F776),
    (0x1F77B, 0x1F77F), (0x1F7D9, 0x1F7D9), (0x1FA75, 0x1FA77), (0x1FA87, 0x1FA88),
    (0x1FAAD, 0x1FAAF), (0x1FABB, 0x1FABD), (0x1FABF, 0x1FABF), (0x1FACE, 0x1FACF),
    (0x1FADA, 0x1FADB), (0x1FAE8, 0x1FAE8), (0x1FAF7, 0x1FAF8),
)
#: TensorFlow's whitespace split: ASCII whitespace only
_WORD_RE = re.compile(r"[^ \t\n\x0b\x0c\r]+")


class _PunctTable(dict):
    """``str.translate`` table, filled on demand: P* and S* code points -> a space."""

    def __missing__(self, cp: int) -> str:
        ch = chr(cp)
        out = " " if unicodedata.category(ch)[0] in "PS" or cp in _TF_EXTRA_PUNCT else ch
        self[cp] = out
        return out


_PUNCT_TABLE = _PunctTable()


def standardize(text: str) -> str:
    """Pure-Python ``_standardize`` (no TensorFlow): lower-case, P*/S* to spaces."""
    text = text.split("\x00", 1)[0]  # TF's UTF-8 lower-casing stops at the first NUL
    if _KEEP_CASE_RE.search(text) is None:
        low = text.lower()
    else:
        parts = _KEEP_CASE_RE.split(text)  # odd items: characters TF keeps as they are
        low = "".join(p if i % 2 else p.lower() for i, p in enumerate(parts))
    return low.translate(_PUNCT_TABLE)


def tokens(text: str) -> list[str]:
    """The words of ``text`` as the encoder sees them (before truncation)."""
    return _WORD_RE.findall(standardize(text))


def _preview(text: str) -> str:
    return repr(text if len(text) <= _PREVIEW else text[:_PREVIEW] + "...")


_LAYERS: dict[str, Any] = {}


def _layers() -> dict[str, Any]:
    """Define (once) and register the custom Keras layers; imports Keras lazily."""
    if _LAYERS:
        return _LAYERS
    keras = import_keras()
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
    keras = import_keras()
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
    keras = import_keras()
    return keras.layers.TextVectorization(
        standardize=_standardize,
        split="whitespace",
        output_mode="int",
        vocabulary=words if words else None,
        name="vectorize",
    )


def _full_model(vectorizer, core):
    """Strings (batch,) -> [vectors, known counts]: the one model ``encode`` calls."""
    keras = import_keras()
    text = keras.Input(shape=(1,), dtype="string", name="text")
    ids = vectorizer(text)
    vec, known = core(ids)
    return keras.Model(text, [vec, known], name="text_encoder")


def _load_core(path: Path):
    """``model.keras`` (the token-id model) through Keras, ``safe_mode=True``."""
    keras = import_keras()
    _layers()
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except (OSError, ValueError) as exc:
        raise EncoderError(f"cannot load the text encoder from {path}: {exc}") from None


def _tokenize(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Flat tokens (object array of str) and the row of each token (:func:`tokens`)."""
    toks = [tokens(t) for t in texts]
    flat = np.empty(sum(len(t) for t in toks), dtype=object)
    flat[:] = [w for t in toks for w in t]
    rows = np.repeat(np.arange(len(texts), dtype=np.int64), [len(t) for t in toks])
    return flat, rows


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


def _vocabulary(corpus: list[str], weighting: str = "idf"):
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


def _grams(word: str) -> set[str]:
    """The character n-grams (:data:`NGRAMS`, with ``<``/``>`` boundary marks) of a word."""
    b = "<" + word + ">"
    return {b[i : i + n] for n in NGRAMS for i in range(len(b) - n + 1)} - {b}


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
        for g in sorted(_grams(w)):
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

    def __init__(
        self,
        words: list[str],
        cfg: dict[str, Any],
        *,
        embeddings: np.ndarray,
        token_weights: np.ndarray,
        sublinear_tf: bool = True,
        core=None,
        folder: Path | None = None,
        learned: np.ndarray | None = None,
        neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        self._words = list(words)
        # started from a prior: the adapted prior vectors of the vocabulary (for words the
        # vocabulary lacks, see _oov), else None (the from-scratch encoder)
        self._learned = None if learned is None else np.asarray(learned)
        self._learned_unit = None
        self._nb, self._nw = neighbours if neighbours is not None else (None, None)
        self._grams = None  # n-gram -> vocabulary ids, built on the first word neither knows
        self._oov_cache: dict[str, tuple[np.ndarray, bool]] = {}
        self._cfg = dict(cfg)
        self._index = {w: i + 2 for i, w in enumerate(self._words)}
        self._emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        self._tw = np.ascontiguousarray(token_weights, dtype=np.float32)
        self._sublinear = bool(sublinear_tf)
        self._core = core  # Keras token-id model: kept after fit, loaded lazily after load
        self._folder = folder
        self._model = None

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
        """The Keras model (string tensor (n, 1) -> [vectors, known counts]) that the numpy
        path of ``encode`` reproduces; built on first use (imports TensorFlow)."""
        if self._model is None:
            import_tensorflow()
            self._model = _full_model(_vectorizer(self._words), self._keras_core())
        return self._model

    def _keras_core(self):
        """The token-id Keras model: the one trained, or ``model.keras`` (``safe_mode``)."""
        if self._core is None and self._folder is not None:
            self._core = _load_core(Path(self._folder) / "model.keras")
        elif self._core is None:  # started from a prior: the model of the arrays
            core = _build_core(len(self._tw), self.dim, self._sublinear)
            core.get_layer("embedding").embeddings.assign(self._emb)
            core.get_layer("pooling").token_weights.assign(self._tw)
            self._core = core
        return self._core

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
        prior: "Prior | str | None" = None,
    ) -> "TextEncoder":
        """Learn the vocabulary and the embeddings from ``texts`` (+ ``extra_texts``).

        ``weighting`` ("idf" default, or "mean") and ``sublinear_tf`` select the pooling,
        ``train=False`` keeps the random initial embeddings, ``subwords=False`` trains the
        word vectors without character n-grams; these exist for the benchmark.

        ``prior``: ``"wordnet"`` (the shipped English prior) or a :class:`Prior` starts from
        it (see :func:`_fit_prior`; ``dim`` then caps the vector length, default 2048, and
        ``weighting``, ``sublinear_tf``, ``subwords`` are fixed: idf, sublinear, n-grams);
        None (default here; ``build text --prior none``) learns from the texts alone.
        """
        texts = _check_texts(texts, "texts")
        extra = _check_texts(extra_texts or [], "extra texts")
        dim_given = dim
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
        if prior is not None:
            return _fit_prior(cls, texts, extra, prior, dim=dim_given, epochs=epochs, seed=seed,
                              train=train, say=say, quiet=quiet, t0=t0)

        tf = import_tensorflow()  # quietly, whoever calls fit
        keras = import_keras()
        keras.utils.set_random_seed(seed)
        rng = np.random.default_rng(seed)

        words, docs, pairs, weights = _vocabulary(corpus, weighting)
        vocab_size = len(words) + 2
        n_docs = len(corpus)

        core = _build_core(vocab_size, dim, sublinear_tf)
        emb_layer = core.get_layer("embedding")
        core.get_layer("pooling").token_weights.assign(weights)

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
        return cls(
            words,
            cfg,
            embeddings=np.asarray(emb_layer.embeddings),
            token_weights=np.asarray(core.get_layer("pooling").token_weights),
            sublinear_tf=sublinear_tf,
            core=core,
        )

    @staticmethod
    def _train(docs, weights, sublinear_tf, embeddings, epochs, rng, say, tf, keras, sub=None,
               grams_zero=False):
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
    def encode(self, items: Any) -> np.ndarray:
        """float32 (n, dim) unit vectors; a str is one item. Refuses items with no known word.

        Pure numpy (no TensorFlow): :func:`tokens`, vocabulary lookup, the first
        ``MAX_TOKENS`` tokens, then :meth:`_pool`, item by item (memory bounded by one
        item). Equal to :attr:`keras_model` within 1e-5.
        """
        single = isinstance(items, str)
        texts = _check_texts(items, "text items")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            if not t.strip():
                where = "query" if single else f"text {i}"
                raise EncoderError(f"{where} is empty: nothing to encode")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        pool = self._pool if self._learned is None else self._pool_prior
        for j, t in enumerate(texts):
            vec = pool(self.token_ids(t)) if self._learned is None else pool(t)
            if vec is None:
                where = f"query {_preview(t)}" if single else f"text {j} ({_preview(t)})"
                also = "" if self._learned is None else " nor in the English prior"
                raise EncoderError(
                    f"no known words in {where}: none of its words is in the encoder's "
                    f"vocabulary of {len(self._words)} words{also}"
                )
            out[j] = vec
        return out

    def token_ids(self, text: str) -> np.ndarray:
        """int64 ids of the first ``MAX_TOKENS`` tokens of ``text`` (1 = unknown word)."""
        get = self._index.get
        toks = tokens(text)[:MAX_TOKENS]
        return np.fromiter((get(w, 1) for w in toks), dtype=np.int64, count=len(toks))

    def _pool(self, ids: np.ndarray) -> np.ndarray | None:
        """WeightedTokenPooling + UnitNormalization of one row in numpy; None: no known id.

        Each distinct known id ``u`` occurring ``c`` times weighs ``token_weights[u]`` x
        (1 + log c) with sublinear tf (x c without), the Keras layer's per-position weights
        summed; the weighted mean is divided by max(total, 1e-12); then
        ``x * min(1 / ||x||, 1e12)`` as keras.ops.normalize.
        """
        ids = ids[ids > 1]
        if ids.size == 0:
            return None
        u, c = np.unique(ids, return_counts=True)
        w = self._tw[u].astype(np.float64)
        w = w * (1.0 + np.log(c)) if self._sublinear else w * c
        total = max(float(w.sum()), 1e-12)
        pooled = (w / total).astype(np.float32) @ self._emb[u]
        sq = float(np.dot(pooled, pooled))
        inv = min(1.0 / math.sqrt(sq), 1e12) if sq > 0 else 1e12
        return pooled * np.float32(inv)

    def _pool_prior(self, text: str) -> np.ndarray | None:
        """:meth:`_pool` for an encoder started from a prior: each word's identity row plus,
        weighted by :func:`_prior.short_weight` of the text's length, its neighbours' rows;
        words outside the vocabulary are not dropped but weigh the largest idf, with vectors
        from :meth:`_oov`. None when no word is in the vocabulary or the prior."""
        toks = tokens(text)[:MAX_TOKENS]
        get = self._index.get
        ids = np.fromiter((get(w, 1) for w in toks), dtype=np.int64, count=len(toks))
        known = ids[ids > 1]
        ident = np.zeros(self.dim, dtype=np.float64)
        syn = np.zeros(self.dim, dtype=np.float64)
        total = 0.0
        any_known = known.size > 0
        n_words = 0
        if known.size:
            u, c = np.unique(known, return_counts=True)
            w = self._tw[u].astype(np.float64) * (1.0 + np.log(c))
            ident += w @ self._emb[u]
            nw = (w[:, None] * self._nw[u]).ravel()
            syn += nw @ self._emb[self._nb[u].ravel()]
            total += float(w.sum())
            n_words += u.size
        others: dict[str, int] = {}
        for word, i in zip(toks, ids):
            if i == 1:
                others[word] = others.get(word, 0) + 1
        for word, c in others.items():
            own, near, in_prior = self._oov(word)
            any_known = any_known or in_prior
            w = float(self._cfg["unknown_weight"]) * (1.0 + math.log(c))
            ident += w * own
            syn += w * near
            total += w
            n_words += 1
        if not any_known:
            return None
        short = float(self._cfg.get("short", _prior.SHORT))
        vec = (ident + _prior.short_weight(n_words, short) * syn) / max(total, 1e-12)
        norm = float(np.linalg.norm(vec))
        return (vec / norm if norm > 0 else vec).astype(np.float32)

    def _oov(self, word: str) -> tuple[np.ndarray, np.ndarray, bool]:
        """A word outside the vocabulary: its own fixed random direction (in the extra
        dimensions of the exact scheme, so it meets no vocabulary word) and its near vocabulary
        words' rows, near by its prior vector or else by its subword vector
        (:meth:`_subword_vector`). Returns (own, near, in the prior)."""
        hit = self._oov_cache.get(word)
        if hit is not None:
            return hit
        cfg = self._cfg
        own = np.zeros(self.dim, dtype=np.float32)
        extra = int(cfg.get("oov_dims", 0))
        if extra:
            own[self.dim - extra :] = _prior.identity_vector(word, extra)
        else:
            own[:] = _prior.identity_vector(word, self.dim)
        own *= float(cfg.get("oov_scale", 1.0))
        near = np.zeros(self.dim, dtype=np.float32)
        if self._learned_unit is None:
            lv = self._learned.astype(np.float32)
            self._learned_unit = lv / np.maximum(np.linalg.norm(lv, axis=1, keepdims=True), 1e-12)
        p = self._prior_vector(word)
        q = p if p is not None else self._subword_vector(word)
        if q is not None:
            sim = self._learned_unit @ q
            k = min(int(cfg["neighbours"]), len(sim))
            if k:
                top = np.argpartition(-sim, k - 1)[:k]
                wt = float(cfg["expansion"]) * np.maximum(sim[top] - float(cfg["threshold"]), 0)
                near = wt.astype(np.float32) @ self._emb[top]
        hit = (own, near, p is not None)
        if len(self._oov_cache) < 100_000:
            self._oov_cache[word] = hit
        return hit

    def _subword_vector(self, word: str) -> np.ndarray | None:
        """A word neither the vocabulary nor the prior knows: the mean of the (adapted)
        vectors of the vocabulary words sharing its character n-grams, each weighted by the
        share of n-grams in common (Dice); None if no word shares half of its n-grams."""
        if self._grams is None:
            index: dict[str, list[int]] = {}
            sizes = np.zeros(len(self._words) + 2, np.int64)
            for i, w in enumerate(self._words):
                grams = _grams(w)
                sizes[i + 2] = len(grams)
                for g in grams:
                    index.setdefault(g, []).append(i + 2)
            self._grams = (index, sizes)
        index, sizes = self._grams
        mine = _grams(word)
        shared: dict[int, int] = {}
        for g in mine:
            for i in index.get(g, ()):
                shared[i] = shared.get(i, 0) + 1
        if not shared:
            return None
        ids = np.fromiter(shared, np.int64, len(shared))
        dice = 2.0 * np.fromiter(shared.values(), np.float64, len(shared)) / (
            sizes[ids] + len(mine))
        keep = dice >= 0.5
        if not keep.any():
            return None
        v = dice[keep].astype(np.float32) @ self._learned_unit[ids[keep]]
        n = float(np.linalg.norm(v))
        return v / n if n > 0 else None

    def _prior_vector(self, word: str) -> np.ndarray | None:
        """The word's vector in the shipped prior, if this encoder was built from that very
        file (sha256 in the config); otherwise None (the word keeps its identity only)."""
        digest = self._cfg.get("prior_sha256")
        if not digest or not _prior.PRIOR_PATH.exists():
            return None
        prior = _prior.shipped_prior()
        if prior.digest != digest:
            return None
        v = prior.vector(word)
        if v is None:
            return None
        return v / max(float(np.linalg.norm(v)), 1e-12)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: Path) -> list[str]:
        """Write ``model.keras``, ``vocab.json`` and ``inference.npz``; return their names."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        same = self._folder is not None and Path(self._folder).resolve() == folder.resolve()
        if not same:  # (saving onto the files it was loaded from: model.keras is there)
            self._keras_core().save(folder / "model.keras")
        with open(folder / "vocab.json", "w", encoding="utf-8") as fh:
            json.dump(self._words, fh, ensure_ascii=False)
        with open(folder / "inference.npz", "wb") as fh:
            extra = {} if self._learned is None else {
                "learned": self._learned, "neighbours": self._nb, "neighbour_weights": self._nw}
            np.savez(
                fh,
                embeddings=self._emb,
                token_weights=self._tw,
                sublinear_tf=np.array(self._sublinear),
                **extra,
            )
        return ["model.keras", "vocab.json", "inference.npz"]

    @classmethod
    def load(cls, folder: Path, config: dict[str, Any]) -> "TextEncoder":
        """Read ``vocab.json`` and ``inference.npz``; imports neither TensorFlow nor Keras.

        Without ``inference.npz`` (saved by an older version) the arrays are taken from
        ``model.keras`` through Keras instead.
        """
        folder = Path(folder)
        core = None
        learned = nbrs = None
        try:
            with open(folder / "vocab.json", encoding="utf-8") as fh:
                words = json.load(fh)
            if (folder / "inference.npz").exists():
                with np.load(folder / "inference.npz", allow_pickle=False) as z:
                    emb = z["embeddings"]
                    tw = z["token_weights"]
                    sublinear = bool(z["sublinear_tf"]) if "sublinear_tf" in z else None
                    learned = z["learned"] if "learned" in z else None
                    if learned is not None:
                        nbrs = (z["neighbours"].astype(np.int64),
                                z["neighbour_weights"].astype(np.float32))
            else:
                core = _load_core(folder / "model.keras")
                emb = np.asarray(core.get_layer("embedding").embeddings)
                tw = np.asarray(core.get_layer("pooling").token_weights)
                sublinear = bool(core.get_layer("pooling").sublinear_tf)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise EncoderError(f"cannot load the text encoder from {folder}: {exc}") from None
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise EncoderError(f"{folder / 'vocab.json'} is not a list of words")
        if (
            emb.ndim != 2
            or tw.shape != (emb.shape[0],)
            or not np.issubdtype(emb.dtype, np.floating)
            or not np.issubdtype(tw.dtype, np.floating)
        ):
            raise EncoderError(
                f"{folder / 'inference.npz'} holds arrays of unexpected shapes "
                f"{emb.shape} and {tw.shape}"
            )
        if len(words) + 2 != emb.shape[0]:
            raise EncoderError(
                f"vocab.json has {len(words)} words but the model expects {emb.shape[0] - 2}"
            )
        cfg = dict(config)
        cfg.setdefault("dim", int(emb.shape[1]))
        if int(cfg["dim"]) != emb.shape[1]:
            raise EncoderError(
                f"the text encoder's vectors have {emb.shape[1]} dimensions, "
                f"its configuration says {cfg['dim']}"
            )
        if sublinear is None:
            sublinear = bool(cfg.get("sublinear_tf", True))
        if learned is not None and (
            learned.ndim != 2 or learned.shape[0] != emb.shape[0]
            or nbrs[0].shape != nbrs[1].shape or nbrs[0].shape[0] != emb.shape[0]
            or (nbrs[0].size and (nbrs[0].min() < 0 or nbrs[0].max() >= emb.shape[0]))
        ):
            raise EncoderError(f"{folder / 'inference.npz'} holds a malformed prior part")
        return cls(words, cfg, embeddings=emb, token_weights=tw, sublinear_tf=sublinear,
                   core=core, folder=folder, learned=learned, neighbours=nbrs)


def _fit_prior(cls, texts, extra, prior, *, dim, epochs, seed, train, say, quiet, t0):
    """The default ``build text``: word vectors from the prior, adapted to the collection.

    1. Vocabulary and idf from the collection's texts (as without a prior).
    2. Each word's prior vector (its lemma's, via WordNet's forms), and for the words the
       prior lacks a random start; then the existing contrastive training on the collection
       (character n-grams, starting at zero, give the collection's own words subword
       vectors): the adaptation (``train=False`` skips it).
    3. Each word's direction: an identity part, so idf pooling ranks as TF-IDF cosine does,
       plus its near words' identities (adapted prior cosine above ``THRESHOLD``), so
       "slice" meets "cut". The identity is exact (an orthonormal basis of the collection's
       TF-IDF rows, plus ``OOV_DIM`` dimensions for words met later) when the collection has
       at most ``dim - OOV_DIM`` texts, else a fixed random direction per word in ``dim``.
    """
    if isinstance(prior, str):
        if prior != "wordnet":
            raise InvalidInput(f"prior must be 'wordnet' or none, got {prior!r}")
        prior = _prior.shipped_prior()
    if not isinstance(prior, Prior):
        raise InvalidInput(f"prior must be 'wordnet', a Prior or None, not {type(prior).__name__}")
    dim = _prior.IDENTITY_DIM if dim is None else int(dim)
    corpus = texts + extra
    words, docs, pairs, weights = _vocabulary(corpus)
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
        n_epochs = int(epochs) if epochs is not None else int(
            np.clip(math.ceil(DEFAULT_PAIRS / n_docs), MIN_EPOCHS, MAX_EPOCHS))
        var = keras.Variable(learned, name="adapted_prior")
        sub = _subwords(words, pairs, vocab_size, n_docs)
        final_loss, steps = cls._train(docs, weights, True, var, n_epochs, rng, say, tf, keras,
                                       sub, grams_zero=True)
        adapted = np.asarray(var.numpy(), dtype=np.float32)
        if _prior.KEEP_PRIOR:
            adapted[has] = learned[has]
        learned = adapted
        learned[:2] = 0.0
    usable = has.copy()
    if _prior.NEW_WORDS_MEET and steps:
        usable[2:] = True
    nb, wt = _prior.neighbours(learned, usable)
    if 2 * n_docs + _prior.OOV_DIM <= dim:
        scheme = "exact"
        basis = _prior.exact_basis(docs, weights, True, nb, wt)
        base_norm = float(np.mean(np.linalg.norm(basis[2:], axis=1))) if vocab_size > 2 else 1.0
        emb = np.hstack([basis, np.zeros((vocab_size, _prior.OOV_DIM))]).astype(np.float32)
        oov_dims = _prior.OOV_DIM
    else:
        scheme = "random"
        emb = np.zeros((vocab_size, dim), np.float32)
        emb[2:] = _prior.identity_matrix(words, dim)
        base_norm, oov_dims = 1.0, 0
    emb[:2] = 0.0
    seconds = time.perf_counter() - t0
    cfg = {
        "dim": int(emb.shape[1]),
        "max_tokens": MAX_TOKENS,
        "vocab_size": vocab_size,
        "weighting": "idf",
        "sublinear_tf": True,
        "standardize": "lowercase; Unicode punctuation/symbols to spaces; whitespace split",
        "prior": "wordnet-3.0",
        "prior_sha256": prior.digest,
        "prior_words": int(has.sum()),
        "identity": scheme,
        "oov_dims": oov_dims,
        "oov_scale": round(base_norm, 6),
        "unknown_weight": float(math.log(1.0 + n_docs) + 1.0),
        "neighbours": int(nb.shape[1]),
        "threshold": float(_prior.THRESHOLD),
        "expansion": float(_prior.EXPANSION),
        "short": float(_prior.SHORT),
        "objective": ("contrastive two-view InfoNCE from the prior, in-batch negatives"
                      if steps else "none (prior as shipped)"),
        "subwords": f"char {min(NGRAMS)}-{max(NGRAMS)}-grams x {NGRAM_WEIGHT}" if steps else "none",
        "temperature": TEMPERATURE,
        "batch_size": BATCH_SIZE,
        "epochs": n_epochs,
        "steps": steps,
        "final_loss": None if final_loss is None else round(float(final_loss), 6),
        "train_seconds": round(seconds, 3),
        "train_texts": len(texts),
        "extra_texts": len(extra),
        "seed": int(seed),
    }
    say(f"text encoder: {vocab_size - 2} words ({int(has.sum())} in the prior), {scheme} "
        f"identity, dim {cfg['dim']}, {n_epochs} adaptation epochs, {seconds:.1f} s")
    return cls(words, cfg, embeddings=emb, token_weights=weights, sublinear_tf=True,
               learned=learned.astype(np.float16), neighbours=(nb, wt))

"""The ``text`` encoder: strings -> unit-length pooled word-embedding vectors.

Encoding is numpy only: :func:`~latentsearch.encoders.text.tokenize.tokens`, vocabulary
lookup (index 0 is padding, 1 the unknown word; both weigh zero), the first ``MAX_TOKENS``
tokens, then an idf x sublinear-tf weighted mean of the word vectors, unit-normalised. An
item with no known word at all is refused with :class:`EncoderError` rather than encoded as
a meaningless zero vector. An encoder started from the prior also gives words outside its
vocabulary a direction of their own and their near vocabulary words (:meth:`_oov`).

Persistence, and why: ``vocab.json`` holds the vocabulary as plain JSON (readable and
checksummable by the manifest); ``inference.npz`` (``np.savez``, no pickled objects, read
with ``allow_pickle=False``) the ``Embedding`` matrix ``embeddings`` float32 (vocab, dim),
the pooling's ``token_weights`` float32 (vocab,) and ``sublinear_tf``; started from a prior
also ``learned`` float16 (vocab, prior dim) and the synonym lists ``neighbours`` int64 /
``neighbour_weights`` float32 (vocab, 10). (Chosen over reading the arrays out of
``model.keras`` with zipfile + h5py: that layout is Keras-internal and has changed between
versions.) ``model.keras`` (:mod:`latentsearch.encoders.text.model`) is written too, and
read only for a collection saved before ``inference.npz`` existed. ``load`` never imports
TensorFlow or Keras, and ``encode`` runs the same numpy path right after ``fit`` as after
``load``, so the vectors of a build and of later queries come from identical code; the
tests check it against the Keras model within 1e-5.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.errors import EncoderError, InvalidInput
from latentsearch.encoders.base import Encoder
from latentsearch.encoders.prior import (
    PRIOR_PATH,
    SHORT,
    Prior,
    identity_vector,
    short_weight,
    shipped_prior,
)
from latentsearch.encoders.text.model import build_core, load_core
from latentsearch.encoders.text.tokenize import MAX_TOKENS, char_ngrams, check_texts, tokens
from latentsearch.encoders.text.training import (
    DEFAULT_DIM,
    train_from_prior,
    train_from_scratch,
)
from latentsearch.progress import bar

__all__ = ["TextEncoder"]

_PREVIEW = 60


def _preview(text: str) -> str:
    return repr(text if len(text) <= _PREVIEW else text[:_PREVIEW] + "...")


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
        core: Any = None,
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

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return int(self._cfg["dim"])

    @property
    def vocabulary(self) -> list[str]:
        """Known words, in id order from 2 (0 is padding, 1 the unknown word)."""
        return list(self._words)

    @property
    def keras_core(self) -> Any:
        """The token-id Keras model (int64 ids (n, tokens) -> [unit vectors, known counts])
        that ``encode`` reproduces in numpy: the one trained, ``model.keras`` (``safe_mode``),
        or, started from a prior, built from the arrays. Imports TensorFlow."""
        if self._core is None and self._folder is not None:
            self._core = load_core(Path(self._folder) / "model.keras")
        elif self._core is None:  # started from a prior: the model of the arrays
            core = build_core(len(self._tw), self.dim, self._sublinear)
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
        it (see :func:`~latentsearch.encoders.text.training.train_from_prior`; ``dim`` then
        caps the vector length, default 2048, and ``weighting``, ``sublinear_tf``,
        ``subwords`` are fixed: idf, sublinear, n-grams); None (default here;
        ``build text --prior none``) learns from the texts alone.
        """
        texts = check_texts(texts, "texts")
        extra = check_texts(extra_texts or [], "extra texts")
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
        if prior is not None:
            t = train_from_prior(texts, extra, prior, dim=dim_given, epochs=epochs, seed=seed,
                                 quiet=quiet, train=train)
        else:
            t = train_from_scratch(texts, extra, dim=dim, epochs=epochs, seed=seed, quiet=quiet,
                                   weighting=weighting, sublinear_tf=sublinear_tf, train=train,
                                   subwords=subwords)
        return cls(t.words, t.config, embeddings=t.embeddings, token_weights=t.token_weights,
                   sublinear_tf=t.sublinear_tf, core=t.core, learned=t.learned,
                   neighbours=t.neighbours)

    # ------------------------------------------------------------------ encoding
    def encode(self, items: Any) -> np.ndarray:
        """float32 (n, dim) unit vectors; a str is one item. Refuses items with no known word.

        Pure numpy (no TensorFlow): :func:`tokens`, vocabulary lookup, the first
        ``MAX_TOKENS`` tokens, then :meth:`_pool`, item by item (memory bounded by one
        item). Equal to the Keras model (:attr:`keras_core`) within 1e-5.
        """
        single = isinstance(items, str)
        texts = check_texts(items, "text items")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            if not t.strip():
                where = "query" if single else f"text {i}"
                raise EncoderError(f"{where} is empty: nothing to encode")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        pool = self._pool if self._learned is None else self._pool_prior
        for j, t in enumerate(bar(texts, desc="encoding texts", unit="text",
                                  quiet=len(texts) < 2_000)):
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
        weighted by :func:`short_weight` of the text's length, its neighbours' rows;
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
        short = float(self._cfg.get("short", SHORT))
        vec = (ident + short_weight(n_words, short) * syn) / max(total, 1e-12)
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
            own[self.dim - extra :] = identity_vector(word, extra)
        else:
            own[:] = identity_vector(word, self.dim)
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
                grams = char_ngrams(w)
                sizes[i + 2] = len(grams)
                for g in grams:
                    index.setdefault(g, []).append(i + 2)
            self._grams = (index, sizes)
        index, sizes = self._grams
        mine = char_ngrams(word)
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
        if not digest or not PRIOR_PATH.exists():
            return None
        prior = shipped_prior()
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
            self.keras_core.save(folder / "model.keras")
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
                core = load_core(folder / "model.keras")
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


"""The general-English prior: word vectors learned from Princeton WordNet 3.0, shipped in the package.

A few hundred or thousand texts cannot teach an encoder that "slice" is near "cut"; a
dictionary can. ``scripts/build_prior.py`` turns every WordNet synset into one short text
(its lemmas, the lemmas of its hypernyms and similar synsets, its gloss and examples) and
trains the project's own contrastive text encoder on those texts (two views of a synset must
find each other), so words sharing synsets and glosses get near vectors. The vectors are
centred, unit-normalised and stored as float16 in ``latentsearch/data/prior_wordnet.npz``
(``np.savez``, uncompressed, no pickled objects) with the vocabulary and WordNet's irregular forms (``*.exc``).

Loading needs numpy only; :meth:`Prior.vector` maps inflected words to their lemma with
WordNet's own "morphy" suffix rules, so "slices" and "sliced" find "slice".

WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. (Licence: see
docs/experiments/text.md and /usr/share/doc/wordnet-base/copyright; use, copy, modify and
distribute with this notice.)
"""

from __future__ import annotations

import hashlib
import io
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from latentsearch.errors import EncoderError

__all__ = [
    "EXPANSION",
    "IDENTITY_DIM",
    "KEEP_PRIOR",
    "NEIGHBOURS",
    "NEW_WORDS_MEET",
    "OOV_DIM",
    "POINTERS",
    "PRIOR_PATH",
    "Prior",
    "SHORT",
    "THRESHOLD",
    "WORDNET_EXC",
    "WORDNET_FILES",
    "exact_basis",
    "identity_matrix",
    "identity_vector",
    "neighbours",
    "short_weight",
    "shipped_prior",
    "wordnet_exceptions",
    "wordnet_texts",
]

PRIOR_PATH = Path(__file__).resolve().parent.parent / "data" / "prior_wordnet.npz"
#: WordNet data files, one synset a line (the Debian package puts them in /usr/share/wordnet)
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
WORDNET_EXC = ("noun.exc", "verb.exc", "adj.exc", "adv.exc")
#: pointer symbols whose target lemmas join a synset's text: hypernym, instance hypernym,
#: similar to, also see, verb group (antonyms are left out: they would come out alike)
POINTERS = ("@", "@i", "&", "^", "$")
#: WordNet's morphy detachment rules (suffix, replacement), all parts of speech together
_MORPHY = (
    ("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
    ("men", "man"), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""),
    ("ing", "e"), ("ing", ""), ("er", ""), ("est", ""), ("er", "e"), ("est", "e"),
)


def wordnet_texts(folder: str | Path, limit: int | None = None) -> list[str]:
    """One text per WordNet synset: lemmas, related synsets' lemmas, gloss and examples.

    ``limit`` keeps only the first that many synsets of each data file (for a quick test).
    """
    folder = Path(folder)
    lines: list[tuple[str, str]] = []  # (offset+pos, line)
    lemmas: dict[str, list[str]] = {}
    for fname in WORDNET_FILES:
        path = folder / fname
        if not path.exists():
            raise EncoderError(f"no WordNet data file {path} (apt-get install wordnet-base)")
        n = 0
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  "):  # licence header
                    continue
                head = line.split(" | ", 1)[0].split()
                pos = "a" if head[2] == "s" else head[2]
                count = int(head[3], 16)
                names = [re.sub(r"\(.*\)$", "", head[4 + 2 * i]) for i in range(count)]
                key = head[0] + pos
                lemmas[key] = [w.replace("_", " ") for w in names]
                lines.append((key, line))
                n += 1
                if limit is not None and n >= limit:
                    break
    texts = []
    for key, line in lines:
        head, _, gloss = line.partition(" | ")
        f = head.split()
        count = int(f[3], 16)
        i = 4 + 2 * count
        n_ptr = int(f[i])
        related: list[str] = []
        for j in range(n_ptr):
            sym, off, pos = f[i + 1 + 4 * j], f[i + 2 + 4 * j], f[i + 3 + 4 * j]
            if sym in POINTERS:
                related += lemmas.get(off + ("a" if pos == "s" else pos), [])
        texts.append(" ".join(lemmas[key] + related) + " ; " + gloss.strip())
    return texts


def wordnet_exceptions(folder: str | Path) -> dict[str, str]:
    """Irregular inflections (``"mice" -> "mouse"``) from WordNet's ``*.exc`` files."""
    out: dict[str, str] = {}
    for fname in WORDNET_EXC:
        path = Path(folder) / fname
        if not path.exists():
            continue
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                f = line.split()
                if len(f) >= 2:
                    out.setdefault(f[0].replace("_", " "), f[1].replace("_", " "))
    return out


def identity_vector(word: str, dim: int) -> np.ndarray:
    """A fixed random unit direction for ``word`` (seeded by its UTF-8 bytes, any machine)."""
    seed = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")
    v = np.random.default_rng(seed).standard_normal(dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


def identity_matrix(words: list[str], dim: int) -> np.ndarray:
    """float32 (len(words), dim): :func:`identity_vector` of each word."""
    out = np.empty((len(words), dim), dtype=np.float32)
    for i, w in enumerate(words):
        out[i] = identity_vector(w, dim)
    return out


class Prior:
    """The shipped word vectors (numpy only): ``vector(word)`` or None if WordNet lacks it."""

    def __init__(self, words: list[str], vectors: np.ndarray, exceptions: dict[str, str],
                 digest: str = ""):
        self.words = list(words)
        self.vectors = vectors
        self.exceptions = dict(exceptions)
        self.digest = digest
        self._index = {w: i for i, w in enumerate(self.words)}

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def row(self, word: str) -> int:
        """Row of ``word`` or of its lemma (irregular forms, then morphy rules); -1 if none."""
        i = self._index.get(word)
        if i is not None:
            return i
        base = self.exceptions.get(word)
        if base is not None and base in self._index:
            return self._index[base]
        for suf, rep in _MORPHY:
            if len(word) > len(suf) + 1 and word.endswith(suf):
                i = self._index.get(word[: -len(suf)] + rep)
                if i is not None:
                    return i
        return -1

    def vector(self, word: str) -> np.ndarray | None:
        i = self.row(word)
        return None if i < 0 else self.vectors[i].astype(np.float32)

    def save(self, path: str | Path) -> None:
        keys = list(self.exceptions)
        with open(path, "wb") as fh:
            np.savez(  # uncompressed: loads in a few ms, where inflating took 0.3 s
                fh,
                words=_pack(self.words),
                vectors=self.vectors.astype(np.float16),
                exc_from=_pack(keys),
                exc_to=_pack([self.exceptions[k] for k in keys]),
            )

    @classmethod
    def load(cls, path: str | Path = PRIOR_PATH) -> "Prior":
        path = Path(path)
        try:
            raw = path.read_bytes()
            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                words = _unpack(z["words"])
                vectors = z["vectors"]
                exc = dict(zip(_unpack(z["exc_from"]), _unpack(z["exc_to"])))
        except (OSError, ValueError, KeyError) as exc_:
            raise EncoderError(f"cannot load the text prior {path}: {exc_}") from None
        if vectors.ndim != 2 or len(words) != vectors.shape[0]:
            raise EncoderError(f"the text prior {path} is malformed")
        return cls(words, vectors, exc, digest=hashlib.sha256(raw).hexdigest())


@lru_cache(maxsize=2)
def shipped_prior(path: str = str(PRIOR_PATH)) -> Prior:
    """The package's prior, loaded once per process."""
    return Prior.load(path)


def _pack(words: list[str]) -> np.ndarray:
    """Words as one newline-joined UTF-8 byte array (no object arrays, no pickle)."""
    return np.frombuffer("\n".join(words).encode("utf-8"), dtype=np.uint8)


def _unpack(arr: np.ndarray) -> list[str]:
    s = arr.tobytes().decode("utf-8")
    return s.split("\n") if s else []


# ---------------------------------------------------------------------- the encoder's word vectors
#: neighbours per word, cosine threshold and weight of the synonym expansion (measured on
#: STS-B dev, checked on STS-B train pairs; docs/experiments/text.md)
NEIGHBOURS, THRESHOLD, EXPANSION = 10, 0.3, 0.7
#: the synonym part weighs ``1 / (1 + (n / SHORT) ** 2)`` in a text of ``n`` distinct words:
#: short texts need synonyms to meet, long ones share enough words of their own (on the news
#: halves any fixed expansion cost recall)
SHORT = 12.0
#: after the adaptation the prior's own words keep their prior vectors (the adaptation on the
#: collection's co-occurrences blurred synonyms: STS-B dev 0.775 -> 0.742); only the words the
#: prior lacks take their adapted vectors, placed among the prior's words
KEEP_PRIOR = True
#: the words the prior lacks take part in the synonym search (with their adapted vectors)
NEW_WORDS_MEET = True
#: identity dimensions of a collection too large for the exact TF-IDF subspace
IDENTITY_DIM = 2048
#: extra dimensions (exact scheme) that hold the identity of words the collection lacks
OOV_DIM = 256


def neighbours(vectors: np.ndarray, usable: np.ndarray, k: int | None = None,
               tau: float | None = None, beta: float | None = None):
    """Each row's ``k`` nearest other rows by cosine among ``usable`` rows, with weights
    ``beta * max(0, cos - tau)`` (0 for rows that are not usable themselves); defaults
    :data:`NEIGHBOURS`, :data:`THRESHOLD`, :data:`EXPANSION`."""
    k = NEIGHBOURS if k is None else k
    tau = THRESHOLD if tau is None else tau
    beta = EXPANSION if beta is None else beta
    n = len(vectors)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    unit = np.where(usable[:, None], unit, 0.0).astype(np.float32)
    k = max(0, min(k, int(usable.sum()) - 1))
    nb = np.zeros((n, k), np.int64)
    wt = np.zeros((n, k), np.float32)
    if k == 0:
        return nb, wt
    for s in range(0, n, 2048):
        sim = unit[s : s + 2048] @ unit.T
        sim[np.arange(sim.shape[0]), np.arange(s, s + sim.shape[0])] = -1.0
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        nb[s : s + 2048] = top
        wt[s : s + 2048] = np.take_along_axis(sim, top, 1)
    wt = beta * np.maximum(wt - tau, 0.0)
    wt[~usable] = 0.0
    return nb, wt


def short_weight(n_words: int, short: float = SHORT) -> float:
    """Weight of the synonym part in a text of ``n_words`` distinct words (:data:`SHORT`)."""
    return 1.0 / (1.0 + (n_words / short) ** 2)


def exact_basis(docs: list[np.ndarray], weights: np.ndarray, sublinear: bool, nb: np.ndarray,
                wt: np.ndarray) -> np.ndarray:
    """Word rows (vocab, rank) of an orthonormal basis of the collection's TF-IDF rows ``x_d``
    and of their synonym parts ``x_d W``.

    Those rows span at most ``2 n_docs`` dimensions; with ``B`` orthonormal over that span,
    pooling ``B``'s rows keeps every inner product between documents, and between any query
    and a document, so the identity part ranks exactly as TF-IDF cosine does.
    """
    n, vocab = len(docs), len(weights)
    x = np.zeros((n, vocab), np.float32)  # dense: n <= ~900 texts here
    for i, t in enumerate(docs):
        t = t[t > 1]
        if t.size:
            u, c = np.unique(t, return_counts=True)
            x[i, u] = weights[u] * ((1.0 + np.log(c)) if sublinear else c)
    xw = np.zeros_like(x)
    for j in range(nb.shape[1]):  # x W: each word counts for its neighbours
        np.add.at(xw.T, nb[:, j], (x * wt[:, j]).T)
    both = np.vstack([x, xw])
    lam, u = np.linalg.eigh((both @ both.T).astype(np.float64))
    keep = lam > max(float(lam.max()), 1e-30) * 1e-6
    return both.T @ (u[:, keep] / np.sqrt(lam[keep])).astype(np.float32)

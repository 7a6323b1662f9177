"""The ``text`` encoder: pooled word embeddings, from the WordNet prior or the collection alone.

:mod:`.tokenize` reads a string into words (the rules queries and training share);
:mod:`.vocabulary` turns a corpus into a vocabulary, idf weights and character n-grams;
:mod:`.training` learns the word vectors (contrastive, or from the prior);
:mod:`.model` is the Keras token-id model saved as ``model.keras``; :mod:`.encoder` holds
:class:`TextEncoder`, which encodes with numpy only and saves / loads its files. The
measured variants behind the choices are in docs/experiments/text.md.
"""

from latentsearch.encoders.text.encoder import TextEncoder
from latentsearch.encoders.text.model import INIT_STDDEV
from latentsearch.encoders.text.tokenize import MAX_TOKENS, NGRAMS, char_ngrams, standardize, tokens
from latentsearch.encoders.text.training import (
    BATCH_SIZE,
    DEFAULT_DIM,
    DEFAULT_PAIRS,
    LEARNING_RATE,
    MAX_EPOCHS,
    MIN_EPOCHS,
    TEMPERATURE,
)
from latentsearch.encoders.text.vocabulary import MAX_VOCAB, NGRAM_MIN_WORDS, NGRAM_WEIGHT

__all__ = [
    "BATCH_SIZE",
    "DEFAULT_DIM",
    "DEFAULT_PAIRS",
    "INIT_STDDEV",
    "LEARNING_RATE",
    "MAX_EPOCHS",
    "MAX_TOKENS",
    "MAX_VOCAB",
    "MIN_EPOCHS",
    "NGRAMS",
    "NGRAM_MIN_WORDS",
    "NGRAM_WEIGHT",
    "TEMPERATURE",
    "TextEncoder",
    "char_ngrams",
    "standardize",
    "tokens",
]

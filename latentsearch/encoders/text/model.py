"""``model.keras`` of the text encoder: the token-id Keras model and its two custom layers.

token ids (batch, tokens) --TruncateTokens(512)--> Embedding(mask_zero=True)
--WeightedTokenPooling (idf x sublinear tf; padding and unknown words weigh 0)
--UnitNormalization--> [float32 (batch, dim), known-token count]

Why it is kept although queries run numpy: it is what the training variables live in,
what ``save`` writes (loaded back with ``safe_mode=True``), and the only source of the
arrays for collections saved before ``inference.npz`` existed. Keras is imported lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentsearch.errors import EncoderError
from latentsearch.encoders.tf import import_keras
from latentsearch.encoders.text.tokenize import MAX_TOKENS

__all__ = ["INIT_STDDEV", "build_core", "custom_layers", "load_core"]

#: standard deviation of the random initial embeddings
INIT_STDDEV = 0.1

_LAYERS: dict[str, Any] = {}


def custom_layers() -> dict[str, Any]:
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


def build_core(vocab_size: int, dim: int, sublinear_tf: bool) -> Any:
    """The saved model: token ids (batch, tokens) -> [unit vector (batch, dim), known count]."""
    keras = import_keras()
    layers = custom_layers()
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


def load_core(path: Path) -> Any:
    """``model.keras`` (the token-id model) through Keras, ``safe_mode=True``."""
    keras = import_keras()
    custom_layers()
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except (OSError, ValueError) as exc:
        raise EncoderError(f"cannot load the text encoder from {path}: {exc}") from None

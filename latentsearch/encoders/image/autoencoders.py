"""Image autoencoders: images -> latent vectors (``dense`` and ``conv``).

Both train an autoencoder with TensorFlow/Keras on the user's own images and keep only the
encoder half (``encoder/model.keras``, loaded back with ``safe_mode=True``). ``dense`` is
the classic 784-32-784 autoencoder of the Keras blog, kept as the reference; ``conv``, the
default, was chosen by measurement on the built-in digits (docs/experiments/image.md):
strided convolutions, an L2-normalised latent (so cosine, which on unit vectors ranks as
L2 does), trained on randomly shifted copies of the images to reconstruct the unshifted
ones, which makes the latent tolerant to small displacements.

Training is seeded, holds out a validation split for early stopping (best weights restored)
and prints one progress line per epoch on stderr unless ``quiet``; stdout stays clean.

Queries need no TensorFlow: :meth:`save` also writes the numpy pass of the encoder
(:mod:`latentsearch.encoders.image.forward`) with the sha256 of the ``model.keras`` it was
exported from; when both agree, :meth:`load` reads them without importing TensorFlow and
:meth:`encode` runs numpy (Keras is loaded only if :attr:`model` is asked for). Right after
``fit`` the same pass is exported in memory, so stored vectors and later queries come from
the same code.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from latentsearch.errors import DimensionMismatch, EncoderError, InvalidInput
from latentsearch.io.images import conform_images, image_options
from latentsearch.io.pixels import DEFAULT_FIT, RESAMPLE, check_fit
from latentsearch.encoders.tf import import_keras, import_tensorflow
from latentsearch.encoders.base import Encoder
from latentsearch.progress import bar, say
from latentsearch.encoders.image.forward import (
    FORWARD_JSON,
    FORWARD_NPZ,
    NumpyForward,
    UnsupportedForward,
    export_forward,
)

__all__ = [
    "ConvAutoencoder",
    "DenseAutoencoder",
    "ENCODE_BATCH",
    "KERAS_MIN_BATCH",
    "MODEL_FILE",
    "NUMPY_BATCH",
]

MODEL_FILE = "model.keras"
#: rows per batch when encoding (also what the benchmark compares against ``predict``)
ENCODE_BATCH = 256
#: rows per batch of the numpy pass (bounds the im2col buffers: ~15 MB at 28x28)
NUMPY_BATCH = 256
#: batches at least this long go through Keras instead when TensorFlow is already imported
KERAS_MIN_BATCH = 1024


def _progress_callback(keras, name: str, max_epochs: int):
    """A bar over the epochs and one log line per epoch (Keras' own output is off)."""

    class _Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self._t0 = time.perf_counter()
            self._bar = bar(total=max_epochs, desc=f"{name} autoencoder", unit="epoch")

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            parts = [f"{name} epoch {epoch + 1}/{max_epochs}"]
            for key in ("loss", "val_loss"):
                if key in logs:
                    parts.append(f"{key} {float(logs[key]):.4f}")
            parts.append(f"{time.perf_counter() - self._t0:.1f}s")
            say("  ".join(parts))
            self._bar.update(1)
            if "loss" in logs:
                self._bar.set_postfix(loss=f"{float(logs['loss']):.4f}")

        def on_train_end(self, logs=None):
            self._bar.close()

    return _Progress()


def _scale(images: np.ndarray) -> np.ndarray:
    """uint8 pixels as float32 in [0, 1], in one pass."""
    return np.multiply(images, np.float32(1.0 / 255.0), dtype=np.float32)


class _ImageAutoencoder(Encoder):
    """What both image autoencoders share: data checks, training loop, encode, save, load."""

    modality: ClassVar[str] = "image"
    #: epochs when the caller gives none (early stopping may end sooner)
    default_epochs: ClassVar[int] = 30
    batch_size: ClassVar[int] = 128
    learning_rate: ClassVar[float] = 1e-3
    early_stopping_patience: ClassVar[int] = 5
    validation_share: ClassVar[float] = 0.1

    def __init__(
        self,
        model: Any,
        config: dict[str, Any],
        *,
        forward: NumpyForward | None = None,
        folder: Path | None = None,
    ):
        self._model = model  # None when loaded from the forward files (Keras loaded lazily)
        self._folder = None if folder is None else Path(folder)
        self._config = dict(config)
        self._size = int(config["size"])
        self._channels = int(config["channels"])
        options = image_options(config)  # configs without "fit" stretch, as they were built
        self._fit, self._resample = options["fit"], options["resample"]
        self._latent_dim = int(config["latent_dim"])
        self._numpy = forward  # the numpy forward pass, when the model could be exported
        self._call = None  # the model's forward pass as a tf.function, made on first use

    # -- the seam ----------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._latent_dim

    @property
    def model(self) -> Any:
        """The Keras encoder model (float32 (n, size, size, C) in [0, 1] -> (n, dim)); loaded
        from ``model.keras`` (safe_mode) on first use when the encoder was read from its
        forward files."""
        if self._model is None:
            self._model = self._load_keras(self._folder, self._config)
        return self._model

    @property
    def forward(self) -> NumpyForward | None:
        """The numpy forward pass ``encode`` uses, or None (the model stays on Keras)."""
        return self._numpy

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def conform(self, items: Any) -> np.ndarray:
        """Images as uint8 (n, size, size, C) of the size and colour the model takes."""
        if isinstance(items, np.ndarray) and items.dtype == object:
            raise InvalidInput("images must be numeric arrays, not Python objects")
        return conform_images(items, size=self._size, channels=self._channels, fit=self._fit,
                              resample=self._resample)

    def preprocess(self, items: Any) -> np.ndarray:
        """Images as the model's float32 input (n, size, size, C) in [0, 1]."""
        return _scale(self.conform(items))

    def _forward(self):
        """The Keras model's inference pass compiled once as a tf.function over any batch
        size: calling it batch by batch avoids ``predict``'s per-call set-up (data adapter,
        callbacks), which dominates for single-image queries."""
        if self._call is None:
            tf = import_tensorflow()
            model = self.model
            spec = tf.TensorSpec((None, self._size, self._size, self._channels), tf.float32)

            @tf.function(input_signature=[spec], autograph=False)
            def call(x):
                return model(x, training=False)

            self._call = call
        return self._call

    def _keras_is_faster(self, n: int) -> bool:
        """Large batches go through Keras when TensorFlow is already imported (right after
        training, say): its convolutions ran ~7x faster than numpy's on the 5,000 digits
        (docs/experiments/image.md). Both agree within 1e-5, so which one encodes a batch
        does not change what is found."""
        if n < KERAS_MIN_BATCH or "tensorflow" not in sys.modules:
            return False
        if self._model is None:
            try:
                self.model  # noqa: B018 (loads it)
            except EncoderError:
                return False
        return True

    def encode(self, items: Any) -> np.ndarray:
        x = self.conform(items)  # uint8; scaled to float one batch at a time
        out = np.empty((len(x), self._latent_dim), dtype=np.float32)
        try:
            if self._numpy is not None and not self._keras_is_faster(len(x)):
                forward = self._numpy
                step = NUMPY_BATCH
            else:
                forward = lambda batch: self._forward()(batch).numpy()  # noqa: E731
                step = ENCODE_BATCH
            starts = range(0, len(x), step)
            for start in bar(starts, desc=f"encoding with {self.name}", unit="batch",
                             quiet=len(starts) < 8):
                out[start : start + step] = forward(_scale(x[start : start + step]))
        except EncoderError:
            raise
        except Exception as exc:  # a broken model is an encoder problem, not the user's
            raise EncoderError(f"the {self.name} encoder failed: {exc}") from exc
        if not np.isfinite(out).all():
            raise EncoderError(f"the {self.name} encoder produced NaN or inf")
        return out

    def save(self, folder: Path) -> list[str]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / MODEL_FILE
        if self._model is None and self._folder is not None:  # read from files: copy them
            import shutil

            shutil.copyfile(self._folder / MODEL_FILE, target)
        else:
            self._model.save(target)
        names = [MODEL_FILE]
        if self._numpy is not None:
            names += self._numpy.write(folder, _sha256(target))
        return names

    @classmethod
    def load(cls, folder: Path, config: dict[str, Any]) -> "_ImageAutoencoder":
        folder = Path(folder)
        path = folder / MODEL_FILE
        if not path.is_file():
            raise EncoderError(f"encoder model missing: {path}")
        for key in ("size", "channels", "latent_dim"):
            if key not in config:
                raise EncoderError(f"encoder config lacks {key!r}")
        forward = cls._read_forward(folder)
        if forward is None:  # no forward files (or stale ones): Keras
            return cls(cls._load_keras(folder, config), config, folder=folder)
        want_in = (int(config["size"]), int(config["size"]), int(config["channels"]))
        if forward.input_shape != want_in or forward.output_dim != int(config["latent_dim"]):
            raise EncoderError(
                f"encoder forward files in {folder} take (None, {', '.join(map(str, forward.input_shape))})"
                f" -> (None, {forward.output_dim}), the manifest says (None, "
                f"{', '.join(map(str, want_in))}) -> (None, {config['latent_dim']})"
            )
        return cls(None, config, forward=forward, folder=folder)

    @staticmethod
    def _read_forward(folder: Path) -> NumpyForward | None:
        """The numpy pass saved beside model.keras, or None when its files are absent or were
        exported from another model.keras than the one there (which then wins)."""
        if not ((folder / FORWARD_JSON).is_file() and (folder / FORWARD_NPZ).is_file()):
            return None
        try:
            forward, model_sum = NumpyForward.read(folder)
        except (UnsupportedForward, OSError, ValueError, TypeError, KeyError) as exc:
            raise EncoderError(f"cannot read the encoder's forward files in {folder}: {exc}") from None
        if model_sum != _sha256(folder / MODEL_FILE):
            return None
        return forward

    @staticmethod
    def _load_keras(folder: Path | None, config: dict[str, Any]):
        if folder is None:
            raise EncoderError("the encoder has no Keras model to load")
        path = Path(folder) / MODEL_FILE
        keras = import_keras()
        try:
            model = keras.saving.load_model(path, safe_mode=True, compile=False)
        except Exception as exc:
            raise EncoderError(f"cannot load encoder model {path}: {exc}") from exc
        want_in = (None, int(config["size"]), int(config["size"]), int(config["channels"]))
        got_in = tuple(model.input_shape)
        got_out = tuple(model.output_shape)
        if got_in != want_in or got_out[-1] != int(config["latent_dim"]):
            raise EncoderError(
                f"encoder model {path} takes {got_in} -> {got_out}, the manifest says "
                f"{want_in} -> (None, {config['latent_dim']})"
            )
        return model

    # -- training ----------------------------------------------------------------

    @classmethod
    def _build(cls, keras, size: int, channels: int, latent_dim: int):
        """Return (encoder, decoder, training_input_transform or None)."""
        raise NotImplementedError

    @classmethod
    def _architecture(cls) -> dict[str, Any]:
        return {}

    @classmethod
    def fit(
        cls,
        images: np.ndarray,
        *,
        latent_dim: int = 32,
        epochs: int | None = None,
        seed: int = 0,
        quiet: bool = False,
        fit: str = DEFAULT_FIT,
    ) -> "_ImageAutoencoder":
        """Train on uint8 images (N, H, W, C) with H == W; return the encoder.

        ``fit`` (crop, pad, stretch) is how the images were made square: recorded in the
        config, so later queries and additions are made square the same way.
        """
        fit = check_fit(fit)
        arr = np.asarray(images)
        if arr.ndim == 3:
            arr = arr[..., None]
        if arr.ndim != 4 or arr.shape[1] != arr.shape[2] or arr.shape[3] not in (1, 3):
            raise DimensionMismatch(
                f"training images must be (N, size, size, 1 or 3), got shape {arr.shape}"
            )
        n = int(arr.shape[0])
        if n < 2:
            raise InvalidInput(f"need at least 2 images to train an autoencoder, got {n}")
        latent_dim = int(latent_dim)
        if not 1 <= latent_dim <= 4096:
            raise InvalidInput(f"latent_dim must be between 1 and 4096, got {latent_dim}")
        max_epochs = cls.default_epochs if epochs is None else int(epochs)
        if max_epochs < 1:
            raise InvalidInput(f"epochs must be at least 1, got {max_epochs}")
        size, channels = int(arr.shape[1]), int(arr.shape[3])
        x = _scale(conform_images(arr, size=size, channels=channels))

        keras = import_keras()
        keras.utils.set_random_seed(int(seed))
        order = np.random.default_rng(int(seed)).permutation(n)
        n_val = int(round(n * cls.validation_share)) if n >= 20 else 0
        x_val, x_train = x[order[:n_val]], x[order[n_val:]]

        encoder, decoder, augment = cls._build(keras, size, channels, latent_dim)
        inp = keras.Input((size, size, channels), name="images")
        feed = augment(inp) if augment is not None else inp
        autoencoder = keras.Model(inp, decoder(encoder(feed)), name=f"{cls.name}_autoencoder")
        steps = max(1, int(np.ceil(len(x_train) / cls.batch_size))) * max_epochs
        lr = keras.optimizers.schedules.CosineDecay(cls.learning_rate, steps, alpha=0.05)
        autoencoder.compile(optimizer=keras.optimizers.Adam(lr), loss="binary_crossentropy")

        monitor = "val_loss" if n_val else "loss"
        callbacks = [
            keras.callbacks.EarlyStopping(
                monitor=monitor,
                patience=cls.early_stopping_patience,
                restore_best_weights=True,
            )
        ]
        if not quiet:
            say(f"training the {cls.name} autoencoder on {len(x_train)} images "
                f"({n_val} held out), up to {max_epochs} epochs")
            callbacks.append(_progress_callback(keras, cls.name, max_epochs))
        t0 = time.perf_counter()
        history = autoencoder.fit(
            x_train,
            x_train,
            validation_data=(x_val, x_val) if n_val else None,
            epochs=max_epochs,
            batch_size=cls.batch_size,
            shuffle=True,
            verbose=0,
            callbacks=callbacks,
        )
        seconds = time.perf_counter() - t0
        epochs_run = len(history.history.get("loss", []))
        # reconstruction loss of the kept (best) weights, without augmentation
        train_loss = float(autoencoder.evaluate(x_train, x_train, batch_size=512, verbose=0))
        val_loss = (
            float(autoencoder.evaluate(x_val, x_val, batch_size=512, verbose=0)) if n_val else None
        )
        if not np.isfinite(train_loss):
            raise EncoderError(f"training the {cls.name} autoencoder diverged (loss {train_loss})")
        if not quiet:
            extra = f", validation {val_loss:.4f}" if val_loss is not None else ""
            say(f"trained {cls.name} in {seconds:.1f}s, {epochs_run} epochs; reconstruction "
                f"loss (binary cross-entropy) train {train_loss:.4f}{extra}")
        config = {
            "size": size,
            "channels": channels,
            "color": "gray" if channels == 1 else "rgb",
            "latent_dim": latent_dim,
            "recommended_metric": cls.recommended_metric,
            "architecture": cls._architecture(),
            "loss": "binary_crossentropy",
            "train_loss": round(train_loss, 6),
            "val_loss": None if val_loss is None else round(val_loss, 6),
            "epochs_run": epochs_run,
            "epochs_max": max_epochs,
            "best_epoch": int(np.argmin(history.history[monitor])) + 1 if epochs_run else 0,
            "train_seconds": round(seconds, 2),
            "n_train": int(len(x_train)),
            "n_val": int(n_val),
            "batch_size": cls.batch_size,
            "learning_rate": cls.learning_rate,
            "seed": int(seed),
            "fit": fit,
            "resample": RESAMPLE,
            "keras_version": keras.__version__,
        }
        return cls(encoder, config, forward=export_forward(encoder))

    recommended_metric: ClassVar[str] = "l2"


class DenseAutoencoder(_ImageAutoencoder):
    """The classic fully-connected autoencoder (784-32-784 on MNIST): the reference."""

    name = "dense"
    #: the blog's 50 epochs leave it short of its figure here; it is cheap, so train it
    #: fully (docs/experiments/image.md)
    default_epochs = 100
    batch_size = 256
    recommended_metric = "l2"

    @classmethod
    def _architecture(cls) -> dict[str, Any]:
        return {"kind": "dense", "layers": "Flatten, Dense(latent, relu) | Dense(pixels, sigmoid), Reshape"}

    @classmethod
    def _build(cls, keras, size: int, channels: int, latent_dim: int):
        layers = keras.layers
        pixels = size * size * channels
        inp = keras.Input((size, size, channels), name="image")
        z = layers.Dense(latent_dim, activation="relu", name="latent")(layers.Flatten()(inp))
        encoder = keras.Model(inp, z, name="dense_encoder")
        zin = keras.Input((latent_dim,), name="latent_in")
        out = layers.Reshape((size, size, channels))(layers.Dense(pixels, activation="sigmoid")(zin))
        decoder = keras.Model(zin, out, name="dense_decoder")
        return encoder, decoder, None


class ConvAutoencoder(_ImageAutoencoder):
    """Strided convolutional autoencoder with a Dense bottleneck, shift augmentation and
    L2-normalised latents: the default, tuned on MNIST (docs/experiments/image.md)."""

    name = "conv"
    #: 20 keeps ``build images mnist`` well inside its two minutes for a near-equal
    #: agreement@10 (docs/experiments/image.md)
    default_epochs = 20
    batch_size = 128
    recommended_metric = "cosine"
    #: filters of the strided conv blocks (each halves the image side)
    filters: ClassVar[tuple[int, ...]] = (32, 64)
    #: units of the Dense layer before the latent (0: none)
    hidden: ClassVar[int] = 0
    #: random shift of training inputs, as a share of the image side (0: none)
    shift: ClassVar[float] = 0.07
    #: random rotation of training inputs, as a share of a full turn (0: none)
    rotate: ClassVar[float] = 0.0
    #: L2-normalise the latent inside the model
    unit_latent: ClassVar[bool] = True
    #: batch normalisation after each conv (measured: helps alone, unstable with shifts)
    batch_norm: ClassVar[bool] = False

    @classmethod
    def _architecture(cls) -> dict[str, Any]:
        return {
            "kind": "conv",
            "filters": list(cls.filters),
            "hidden": cls.hidden,
            "batch_norm": cls.batch_norm,
            "train_shift": cls.shift,
            "train_rotate": cls.rotate,
            "unit_latent": cls.unit_latent,
        }

    @classmethod
    def _build(cls, keras, size: int, channels: int, latent_dim: int):
        layers = keras.layers
        n_down = len(cls.filters)
        # strided convs need the side divisible by 2**n_down; pad up, crop back
        side = int(np.ceil(size / 2**n_down)) * 2**n_down
        pad = side - size
        inp = keras.Input((size, size, channels), name="image")
        x = inp
        if pad:
            x = layers.ZeroPadding2D(((pad // 2, pad - pad // 2), (pad // 2, pad - pad // 2)))(x)
        for f in cls.filters:
            x = layers.Conv2D(f, 3, strides=2, padding="same", use_bias=not cls.batch_norm)(x)
            if cls.batch_norm:
                x = layers.BatchNormalization()(x)
            x = layers.Activation("relu")(x)
        x = layers.Flatten()(x)
        if cls.hidden:
            x = layers.Dense(cls.hidden, activation="relu")(x)
        z = layers.Dense(latent_dim, name="latent")(x)
        if cls.unit_latent:
            z = layers.UnitNormalization(name="unit")(z)
        encoder = keras.Model(inp, z, name="conv_encoder")

        small = side // 2**n_down
        zin = keras.Input((latent_dim,), name="latent_in")
        y = zin
        if cls.hidden:
            y = layers.Dense(cls.hidden, activation="relu")(y)
        y = layers.Dense(small * small * cls.filters[-1], activation="relu")(y)
        y = layers.Reshape((small, small, cls.filters[-1]))(y)
        for f in reversed(cls.filters):
            y = layers.Conv2DTranspose(f, 3, strides=2, padding="same", activation="relu")(y)
        y = layers.Conv2D(channels, 3, padding="same", activation="sigmoid")(y)
        if pad:
            y = layers.Cropping2D(((pad // 2, pad - pad // 2), (pad // 2, pad - pad // 2)))(y)
        decoder = keras.Model(zin, y, name="conv_decoder")

        steps = []
        if cls.rotate:
            steps.append(
                layers.RandomRotation(cls.rotate, fill_mode="constant", fill_value=0.0, name="rotate")
            )
        if cls.shift:
            steps.append(
                layers.RandomTranslation(
                    cls.shift, cls.shift, fill_mode="constant", fill_value=0.0, name="shift"
                )
            )
        augment = keras.Sequential(steps, name="augment") if steps else None
        return encoder, decoder, augment


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()

"""Image autoencoders: images -> latent vectors (``dense`` and ``conv``).

Both train an autoencoder with TensorFlow/Keras on the user's own images and keep only the
encoder half (``encoder/model.keras``, loaded back with ``safe_mode=True``). Queries are
encoded by that same saved model.

* ``dense``: the classic 784-32-784 autoencoder of the Keras blog (Flatten, Dense(latent,
  relu), Dense(pixels, sigmoid), reshape), kept as the reference.
* ``conv``: the default, chosen by measurement on the built-in MNIST sample (label
  agreement@10, see benchmarks/images.py and the README): two strided 3x3 convolutions
  (32, 64 filters) and a Dense bottleneck to the latent, which is L2-normalised inside the
  saved model (so the recommended metric is cosine, which on unit vectors ranks exactly as
  L2 does); trained on randomly shifted copies (up to 7% of the side, ~2 px on MNIST) of
  the images to reconstruct the unshifted ones, which makes the latent tolerant to small
  displacements. Measured on the 5,000 digits (agreement@10 with the best metric, 20-30
  epochs; seeds 0/1/2 where three figures): plain two-layer conv AE 0.914; + BatchNorm
  0.917; + L2-normalised latent 0.920-0.923; + shift 10% (25 epochs) 0.934/0.930/0.928;
  shift 7% (25 epochs) 0.936/0.937/0.935, chosen (20 epochs 0.935, 30 epochs 0.938);
  shift 15% 0.920; shift 7% + rotation 0.938/0.936 (not kept: no clear gain); BatchNorm
  with shifts collapsed (0.79); a Dense(128/256) layer before the latent 0.915/0.910; three
  conv blocks (32, 64, 128) 0.931 at twice the time; Gaussian input noise 0.907; learning
  rate 2e-3 0.927.

Training is seeded, holds out a validation split for early stopping (best weights restored)
and prints one progress line per epoch on stderr unless ``quiet``; stdout stays clean.
TensorFlow is imported only inside the functions that need it.

Inference without TensorFlow: beside ``model.keras``, :meth:`save` writes the encoder's layer
sequence as ``forward.json`` (kinds, strides, padding, activations, shapes; no code) and its
weights as ``forward.npz`` (plain arrays, read with ``allow_pickle=False``), for exactly the
layer types these encoders use (InputLayer, ZeroPadding2D, Conv2D, BatchNormalization,
Activation, Flatten, Dense, UnitNormalization); a model with anything else gets no forward
files and stays on Keras. ``forward.json`` records the sha256 of the ``model.keras`` it was
exported from: when both files are there and agree, :meth:`load` reads them without
importing TensorFlow and :meth:`encode` runs the numpy pass (im2col + matmul, in batches);
the Keras model is then loaded only if :attr:`model` is asked for. Right after ``fit`` the
same pass is exported in memory, so stored vectors and later queries come from the same
code. The tests check it against Keras' own output within 1e-5.
"""

from __future__ import annotations

import json
import sys
import time
import hashlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from latentsearch.errors import DimensionMismatch, EncoderError, InvalidInput
from latentsearch.io.images import conform_images
from latentsearch.encoders.tf import import_keras, import_tensorflow
from latentsearch.encoders.base import Encoder

__all__ = ["DenseAutoencoder", "ConvAutoencoder", "NumpyForward", "export_forward"]

MODEL_FILE = "model.keras"
FORWARD_JSON = "forward.json"
FORWARD_NPZ = "forward.npz"
FORWARD_FORMAT = "latentsearch-numpy-forward"
FORWARD_VERSION = 1
#: rows per batch when encoding (also what the benchmark compares against ``predict``)
ENCODE_BATCH = 256
#: rows per batch of the numpy pass (bounds the im2col buffers: ~15 MB at 28x28)
NUMPY_BATCH = 256
#: batches at least this long go through Keras instead when TensorFlow is already imported
KERAS_MIN_BATCH = 1024


def _progress_callback(keras, name: str, max_epochs: int):
    """One line per epoch on stderr (Keras' own verbose output goes to stdout)."""

    class _Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            parts = [f"{name} epoch {epoch + 1}/{max_epochs}"]
            for key in ("loss", "val_loss"):
                if key in logs:
                    parts.append(f"{key} {float(logs[key]):.4f}")
            parts.append(f"{time.perf_counter() - self._t0:.1f}s")
            print("  ".join(parts), file=sys.stderr, flush=True)

    return _Progress()


def _scale(images: np.ndarray) -> np.ndarray:
    """uint8 pixels as float32 in [0, 1], in one pass."""
    return np.multiply(images, np.float32(1.0 / 255.0), dtype=np.float32)


# --------------------------------------------------------------------------- numpy forward


class _Unsupported(Exception):
    """A layer or setting the numpy forward pass does not reproduce."""


_ACTIVATIONS = ("linear", "relu")
#: layer kinds the numpy pass runs (what the two encoders are made of)
FORWARD_KINDS = (
    "ZeroPadding2D",
    "Conv2D",
    "BatchNormalization",
    "Activation",
    "Flatten",
    "Dense",
    "UnitNormalization",
)


def _pair(value: Any, what: str) -> list[int]:
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise _Unsupported(f"{what} must be two integers, got {value!r}") from None
    return [a, b]


def _activation(layer) -> str:
    act = getattr(layer, "activation", None)
    name = "linear" if act is None else getattr(act, "__name__", None)
    if name not in _ACTIVATIONS:
        raise _Unsupported(f"activation {name or act!r} of {layer.name}")
    return name


def _array(var) -> np.ndarray:
    return np.array(var.numpy() if hasattr(var, "numpy") else var, dtype=np.float32)


def export_forward(model) -> "NumpyForward | None":
    """The numpy forward pass of a Keras encoder, or None when the model holds anything the
    pass does not reproduce exactly (another layer type, a branch, a setting), or when its
    output on a probe batch differs from Keras' (a safety net; the tests hold it to 1e-5)."""
    try:
        spec, weights = _export(model)
        forward = NumpyForward(spec, weights)
    except Exception:  # _Unsupported, or a Keras attribute not as expected: stay on Keras
        return None
    rng = np.random.default_rng(0)
    probe = rng.random((4, *forward.input_shape), dtype=np.float32)
    probe[0] = 0.0
    try:
        want = np.asarray(model(probe, training=False), dtype=np.float32)
    except Exception:
        return None
    got = forward(probe)
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-4):
        return None
    return forward


def _export(model) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(spec, weights) of a single-input, single-output chain of supported layers."""
    inputs, outputs = list(model.inputs), list(model.outputs)
    if len(inputs) != 1 or len(outputs) != 1:
        raise _Unsupported("not a single-input, single-output model")
    in_shape = tuple(inputs[0].shape)
    if len(in_shape) != 4 or any(d is None for d in in_shape[1:]):
        raise _Unsupported(f"input shape {in_shape}")
    shape = [int(d) for d in in_shape[1:]]
    spec: dict[str, Any] = {
        "format": FORWARD_FORMAT,
        "version": FORWARD_VERSION,
        "input_shape": list(shape),
        "layers": [],
    }
    weights: dict[str, np.ndarray] = {}
    prev = inputs[0]
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        try:
            taken = layer.input
        except Exception as exc:  # a layer used more than once
            raise _Unsupported(f"{layer.name}: {exc}") from None
        if taken is not prev:
            raise _Unsupported(f"{layer.name} does not take the previous layer's output")
        prev = layer.output
        if kind not in FORWARD_KINDS:
            raise _Unsupported(f"layer type {kind}")
        if getattr(layer, "quantization_mode", None) or getattr(layer, "lora_enabled", False):
            raise _Unsupported(f"{layer.name} is quantized or has LoRA")
        if str(getattr(layer, "compute_dtype", "float32")) != "float32":
            raise _Unsupported(f"{layer.name} computes in {layer.compute_dtype}")
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise _Unsupported(f"{layer.name} is channels_first")
        i = len(spec["layers"])
        entry: dict[str, Any] = {"kind": kind, "name": str(layer.name)}
        if kind == "ZeroPadding2D":
            (t, b), (l, r) = (_pair(p, "padding") for p in layer.padding)
            entry["padding"] = [[t, b], [l, r]]
        elif kind == "Conv2D":
            if _pair(layer.dilation_rate, "dilation") != [1, 1] or int(layer.groups) != 1:
                raise _Unsupported(f"{layer.name}: dilated or grouped convolution")
            if layer.padding not in ("same", "valid"):
                raise _Unsupported(f"{layer.name}: padding {layer.padding!r}")
            entry.update(
                strides=_pair(layer.strides, "strides"),
                padding=str(layer.padding),
                activation=_activation(layer),
                use_bias=bool(layer.use_bias),
            )
            weights[f"{i}.kernel"] = _array(layer.kernel)
            if layer.use_bias:
                weights[f"{i}.bias"] = _array(layer.bias)
        elif kind == "BatchNormalization":
            axis = layer.axis if isinstance(layer.axis, int) else None
            if axis not in (-1, len(shape)):
                raise _Unsupported(f"{layer.name}: axis {layer.axis!r}")
            entry["epsilon"] = float(layer.epsilon)
            weights[f"{i}.moving_mean"] = _array(layer.moving_mean)
            weights[f"{i}.moving_variance"] = _array(layer.moving_variance)
            if layer.scale:
                weights[f"{i}.gamma"] = _array(layer.gamma)
            if layer.center:
                weights[f"{i}.beta"] = _array(layer.beta)
        elif kind == "Activation":
            entry["activation"] = _activation(layer)
        elif kind == "Dense":
            entry.update(activation=_activation(layer), use_bias=bool(layer.use_bias))
            weights[f"{i}.kernel"] = _array(layer.kernel)
            if layer.use_bias:
                weights[f"{i}.bias"] = _array(layer.bias)
        elif kind == "UnitNormalization":
            axis = layer.axis
            axes = [axis] if isinstance(axis, int) else list(axis)
            if len(shape) != 1 or axes not in ([-1], [1]):
                raise _Unsupported(f"{layer.name}: axis {axis!r}")
        spec["layers"].append(entry)
        shape = NumpyForward._out_shape(entry, shape, weights, i)
        entry["output_shape"] = list(shape)
    if prev is not outputs[0]:
        raise _Unsupported("the last layer is not the model's output")
    return spec, weights


class NumpyForward:
    """An exported encoder run with numpy: float32 (n, H, W, C) in [0, 1] -> float32 (n, d).

    Built from a plain description (``forward.json``) and arrays (``forward.npz``); every
    shape is checked when it is built, so a bad pair of files fails at load, not mid-query.
    """

    def __init__(self, spec: dict[str, Any], weights: dict[str, np.ndarray]):
        if not isinstance(spec, dict) or spec.get("format") != FORWARD_FORMAT:
            raise _Unsupported("not a latentsearch forward description")
        if spec.get("version") != FORWARD_VERSION:
            raise _Unsupported(f"forward format version {spec.get('version')!r}")
        layers = spec.get("layers")
        if not isinstance(layers, list):
            raise _Unsupported("no layer list")
        shape = [int(d) for d in spec.get("input_shape", [])]
        if len(shape) != 3 or min(shape) < 1:
            raise _Unsupported(f"input shape {spec.get('input_shape')!r}")
        self.input_shape = tuple(shape)
        self.spec = spec
        self.weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
        self._steps = []
        for i, entry in enumerate(layers):
            if not isinstance(entry, dict) or entry.get("kind") not in FORWARD_KINDS:
                raise _Unsupported(f"layer {i}: {entry!r}")
            shape = self._out_shape(entry, shape, self.weights, i)
            self._steps.append(self._step(entry, i))
        if len(shape) != 1:
            raise _Unsupported(f"the output has shape {shape}, not a vector")
        self.output_dim = int(shape[0])

    # -- shapes and steps --------------------------------------------------------

    @staticmethod
    def _out_shape(entry: dict, shape: list[int], weights: dict, i: int) -> list[int]:
        kind = entry["kind"]

        def need(key: str, want: tuple[int, ...] | None = None, ndim: int | None = None):
            arr = weights.get(f"{i}.{key}")
            if arr is None:
                raise _Unsupported(f"layer {i} ({kind}) lacks weights {key!r}")
            if (want is not None and tuple(arr.shape) != want) or (ndim and arr.ndim != ndim):
                raise _Unsupported(f"layer {i} ({kind}): {key} has shape {arr.shape}")
            return arr

        def act():
            if entry.get("activation") not in _ACTIVATIONS:
                raise _Unsupported(f"layer {i}: activation {entry.get('activation')!r}")

        if kind == "ZeroPadding2D":
            (t, b), (l, r) = (_pair(p, "padding") for p in entry["padding"])
            if len(shape) != 3 or min(t, b, l, r) < 0:
                raise _Unsupported(f"layer {i}: ZeroPadding2D on {shape}")
            return [shape[0] + t + b, shape[1] + l + r, shape[2]]
        if kind == "Conv2D":
            act()
            if len(shape) != 3:
                raise _Unsupported(f"layer {i}: Conv2D on {shape}")
            kernel = need("kernel", ndim=4)
            kh, kw, cin, cout = kernel.shape
            if cin != shape[2]:
                raise _Unsupported(f"layer {i}: kernel {kernel.shape} for input {shape}")
            if entry.get("use_bias"):
                need("bias", (cout,))
            sh, sw = _pair(entry["strides"], "strides")
            if sh < 1 or sw < 1:
                raise _Unsupported(f"layer {i}: strides {sh, sw}")
            if entry.get("padding") == "same":
                oh, ow = -(-shape[0] // sh), -(-shape[1] // sw)
            elif entry.get("padding") == "valid":
                oh, ow = (shape[0] - kh) // sh + 1, (shape[1] - kw) // sw + 1
            else:
                raise _Unsupported(f"layer {i}: padding {entry.get('padding')!r}")
            if oh < 1 or ow < 1:
                raise _Unsupported(f"layer {i}: empty output")
            return [oh, ow, cout]
        if kind == "BatchNormalization":
            c = shape[-1]
            need("moving_mean", (c,))
            need("moving_variance", (c,))
            for key in ("gamma", "beta"):
                if f"{i}.{key}" in weights:
                    need(key, (c,))
            if not float(entry.get("epsilon", -1)) > 0:
                raise _Unsupported(f"layer {i}: epsilon {entry.get('epsilon')!r}")
            return list(shape)
        if kind == "Activation":
            act()
            return list(shape)
        if kind == "Flatten":
            return [int(np.prod(shape))]
        if kind == "Dense":
            act()
            if len(shape) != 1:
                raise _Unsupported(f"layer {i}: Dense on {shape}")
            kernel = need("kernel", ndim=2)
            if kernel.shape[0] != shape[0]:
                raise _Unsupported(f"layer {i}: kernel {kernel.shape} for input {shape}")
            if entry.get("use_bias"):
                need("bias", (kernel.shape[1],))
            return [int(kernel.shape[1])]
        if kind == "UnitNormalization":
            if len(shape) != 1:
                raise _Unsupported(f"layer {i}: UnitNormalization on {shape}")
            return list(shape)
        raise _Unsupported(f"layer {i}: kind {kind!r}")

    def _step(self, entry: dict, i: int):
        kind, w = entry["kind"], self.weights
        relu = entry.get("activation") == "relu"
        if kind == "ZeroPadding2D":
            (t, b), (l, r) = (_pair(p, "padding") for p in entry["padding"])
            return lambda x: np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))
        if kind == "Conv2D":
            kernel = w[f"{i}.kernel"]
            bias = w.get(f"{i}.bias") if entry.get("use_bias") else None
            strides, same = tuple(_pair(entry["strides"], "strides")), entry["padding"] == "same"
            return lambda x: _conv2d(x, kernel, bias, strides, same, relu)
        if kind == "BatchNormalization":
            # as tf.nn.batch_normalization: x * inv + (beta - mean * inv)
            inv = 1.0 / np.sqrt(w[f"{i}.moving_variance"] + np.float32(entry["epsilon"]))
            inv = (inv * w.get(f"{i}.gamma", np.float32(1.0))).astype(np.float32)
            shift = (w.get(f"{i}.beta", np.float32(0.0)) - w[f"{i}.moving_mean"] * inv)
            shift = shift.astype(np.float32)
            return lambda x: x * inv + shift
        if kind == "Activation":
            return (lambda x: np.maximum(x, 0, out=x)) if relu else (lambda x: x)
        if kind == "Flatten":  # channels-last (H, W, C) order, as Keras' Flatten
            return lambda x: x.reshape(len(x), -1)
        if kind == "Dense":
            kernel = w[f"{i}.kernel"]
            bias = w.get(f"{i}.bias") if entry.get("use_bias") else None

            def dense(x):
                y = x @ kernel
                if bias is not None:
                    y += bias
                return np.maximum(y, 0, out=y) if relu else y

            return dense
        if kind == "UnitNormalization":
            # as keras.ops.normalize: x * min(rsqrt(sum(x^2)), 1 / 1e-12)
            def unit(x):
                sq = np.einsum("ij,ij->i", x, x)[:, None]
                with np.errstate(divide="ignore"):
                    inv = np.minimum(1.0 / np.sqrt(sq), np.float32(1e12))
                return x * inv.astype(np.float32)

            return unit
        raise _Unsupported(f"layer {i}: kind {kind!r}")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.input_shape:
            raise DimensionMismatch(f"the encoder takes {self.input_shape}, got {x.shape[1:]}")
        for step in self._steps:
            x = step(x)
        return np.ascontiguousarray(x, dtype=np.float32)

    # -- files -------------------------------------------------------------------

    def write(self, folder: Path, model_sha256: str) -> list[str]:
        doc = dict(self.spec, model_sha256=model_sha256)
        (folder / FORWARD_JSON).write_text(json.dumps(doc, indent=1), encoding="utf-8")
        with open(folder / FORWARD_NPZ, "wb") as f:
            np.savez(f, **self.weights)
        return [FORWARD_JSON, FORWARD_NPZ]

    @classmethod
    def read(cls, folder: Path) -> tuple["NumpyForward", str]:
        """(forward, sha256 of the model.keras it was exported from); raises _Unsupported
        (or OSError / ValueError) on anything malformed. Never unpickles."""
        doc = json.loads((folder / FORWARD_JSON).read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc.get("model_sha256"), str):
            raise _Unsupported("forward.json names no model checksum")
        with np.load(folder / FORWARD_NPZ, allow_pickle=False) as z:
            weights = {k: z[k] for k in z.files}
        for k, v in weights.items():
            if v.dtype != np.float32:
                raise _Unsupported(f"weights {k} are {v.dtype}, not float32")
        spec = {k: v for k, v in doc.items() if k != "model_sha256"}
        return cls(spec, weights), doc["model_sha256"]


def _conv2d(x, kernel, bias, strides, same: bool, relu: bool) -> np.ndarray:
    """Conv2D (channels-last) as im2col + one matmul; 'same' padding as TensorFlow's:
    pad_total = max((out - 1) * stride + k - in, 0), pad_before = pad_total // 2."""
    n, h, w, c = x.shape
    kh, kw, _, f = kernel.shape
    sh, sw = strides
    if same:
        oh, ow = -(-h // sh), -(-w // sw)
        ph = max((oh - 1) * sh + kh - h, 0)
        pw = max((ow - 1) * sw + kw - w, 0)
        if ph or pw:
            x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    else:
        oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    cols = np.empty((n, oh, ow, kh, kw, c), dtype=np.float32)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = x[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw, :]
    y = cols.reshape(n * oh * ow, kh * kw * c) @ kernel.reshape(kh * kw * c, f)
    if bias is not None:
        y += bias
    if relu:
        np.maximum(y, 0, out=y)
    return y.reshape(n, oh, ow, f)


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
        return conform_images(items, size=self._size, channels=self._channels)

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
        (53k against 7.5k images/s; single images: numpy 0.1 ms, Keras 0.35 ms). Both
        agree within 1e-5, so which one encodes a batch does not change what is found."""
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
            for start in range(0, len(x), step):
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
        except (_Unsupported, OSError, ValueError, TypeError, KeyError) as exc:
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
    ) -> "_ImageAutoencoder":
        """Train on uint8 images (N, H, W, C) with H == W; return the encoder."""
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
            print(
                f"training the {cls.name} autoencoder on {len(x_train)} images "
                f"({n_val} held out), up to {max_epochs} epochs",
                file=sys.stderr,
                flush=True,
            )
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
            print(
                f"trained {cls.name} in {seconds:.1f}s, {epochs_run} epochs; reconstruction "
                f"loss (binary cross-entropy) train {train_loss:.4f}{extra}",
                file=sys.stderr,
                flush=True,
            )
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
            "keras_version": keras.__version__,
        }
        return cls(encoder, config, forward=export_forward(encoder))

    recommended_metric: ClassVar[str] = "l2"


class DenseAutoencoder(_ImageAutoencoder):
    """The classic fully-connected autoencoder (784-32-784 on MNIST): the reference."""

    name = "dense"
    #: the blog's 50 epochs at batch 256 leave it short of its figure here (0.843 against
    #: 0.870 agreement@10 at 100 epochs, 15 s); it is cheap, so train it fully
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
    L2-normalised latents: the default, tuned on MNIST (figures in benchmarks/images.py)."""

    name = "conv"
    #: 20 / 25 / 30 epochs measured 0.935 / 0.936 / 0.938 agreement@10 on the built-in
    #: digits, training 52 / 60 / 77 s on the (busy) 2-core machine: 20 keeps
    #: ``build images mnist`` well inside its two minutes
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

"""The numpy inference pass of the image encoders: Keras layers -> plain arrays, im2col + matmul.

Why: a query should not pay TensorFlow's import (seconds) to run a few small layers. Beside
``model.keras`` an encoder folder holds ``forward.json`` (the layer sequence: kinds, strides,
padding, activations, shapes; no code) and ``forward.npz`` (the weights, read with
``allow_pickle=False``), for exactly the layer types the two encoders use (InputLayer,
ZeroPadding2D, Conv2D, BatchNormalization, Activation, Flatten, Dense, UnitNormalization).
A model with anything else gets no forward files and stays on Keras. :func:`export_forward`
also checks the pass against Keras on a probe batch; the tests hold it to 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.errors import DimensionMismatch

__all__ = [
    "FORWARD_FORMAT",
    "FORWARD_JSON",
    "FORWARD_KINDS",
    "FORWARD_NPZ",
    "FORWARD_VERSION",
    "NumpyForward",
    "UnsupportedForward",
    "export_forward",
]

FORWARD_JSON = "forward.json"
FORWARD_NPZ = "forward.npz"
FORWARD_FORMAT = "latentsearch-numpy-forward"
FORWARD_VERSION = 1


class UnsupportedForward(Exception):
    """A layer or setting the numpy forward pass does not reproduce (or a malformed file)."""


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
        raise UnsupportedForward(f"{what} must be two integers, got {value!r}") from None
    return [a, b]


def _activation(layer) -> str:
    act = getattr(layer, "activation", None)
    name = "linear" if act is None else getattr(act, "__name__", None)
    if name not in _ACTIVATIONS:
        raise UnsupportedForward(f"activation {name or act!r} of {layer.name}")
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
    except Exception:  # UnsupportedForward, or a Keras attribute not as expected: stay on Keras
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
        raise UnsupportedForward("not a single-input, single-output model")
    in_shape = tuple(inputs[0].shape)
    if len(in_shape) != 4 or any(d is None for d in in_shape[1:]):
        raise UnsupportedForward(f"input shape {in_shape}")
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
            raise UnsupportedForward(f"{layer.name}: {exc}") from None
        if taken is not prev:
            raise UnsupportedForward(f"{layer.name} does not take the previous layer's output")
        prev = layer.output
        if kind not in FORWARD_KINDS:
            raise UnsupportedForward(f"layer type {kind}")
        if getattr(layer, "quantization_mode", None) or getattr(layer, "lora_enabled", False):
            raise UnsupportedForward(f"{layer.name} is quantized or has LoRA")
        if str(getattr(layer, "compute_dtype", "float32")) != "float32":
            raise UnsupportedForward(f"{layer.name} computes in {layer.compute_dtype}")
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise UnsupportedForward(f"{layer.name} is channels_first")
        i = len(spec["layers"])
        entry: dict[str, Any] = {"kind": kind, "name": str(layer.name)}
        if kind == "ZeroPadding2D":
            (t, b), (l, r) = (_pair(p, "padding") for p in layer.padding)
            entry["padding"] = [[t, b], [l, r]]
        elif kind == "Conv2D":
            if _pair(layer.dilation_rate, "dilation") != [1, 1] or int(layer.groups) != 1:
                raise UnsupportedForward(f"{layer.name}: dilated or grouped convolution")
            if layer.padding not in ("same", "valid"):
                raise UnsupportedForward(f"{layer.name}: padding {layer.padding!r}")
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
                raise UnsupportedForward(f"{layer.name}: axis {layer.axis!r}")
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
                raise UnsupportedForward(f"{layer.name}: axis {axis!r}")
        spec["layers"].append(entry)
        shape = NumpyForward._out_shape(entry, shape, weights, i)
        entry["output_shape"] = list(shape)
    if prev is not outputs[0]:
        raise UnsupportedForward("the last layer is not the model's output")
    return spec, weights


class NumpyForward:
    """An exported encoder run with numpy: float32 (n, H, W, C) in [0, 1] -> float32 (n, d).

    Built from a plain description (``forward.json``) and arrays (``forward.npz``); every
    shape is checked when it is built, so a bad pair of files fails at load, not mid-query.
    """

    def __init__(self, spec: dict[str, Any], weights: dict[str, np.ndarray]):
        if not isinstance(spec, dict) or spec.get("format") != FORWARD_FORMAT:
            raise UnsupportedForward("not a latentsearch forward description")
        if spec.get("version") != FORWARD_VERSION:
            raise UnsupportedForward(f"forward format version {spec.get('version')!r}")
        layers = spec.get("layers")
        if not isinstance(layers, list):
            raise UnsupportedForward("no layer list")
        shape = [int(d) for d in spec.get("input_shape", [])]
        if len(shape) != 3 or min(shape) < 1:
            raise UnsupportedForward(f"input shape {spec.get('input_shape')!r}")
        self.input_shape = tuple(shape)
        self.spec = spec
        self.weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
        self._steps = []
        for i, entry in enumerate(layers):
            if not isinstance(entry, dict) or entry.get("kind") not in FORWARD_KINDS:
                raise UnsupportedForward(f"layer {i}: {entry!r}")
            shape = self._out_shape(entry, shape, self.weights, i)
            self._steps.append(self._step(entry, i))
        if len(shape) != 1:
            raise UnsupportedForward(f"the output has shape {shape}, not a vector")
        self.output_dim = int(shape[0])

    # -- shapes and steps --------------------------------------------------------

    @staticmethod
    def _out_shape(entry: dict, shape: list[int], weights: dict, i: int) -> list[int]:
        kind = entry["kind"]

        def need(key: str, want: tuple[int, ...] | None = None, ndim: int | None = None):
            arr = weights.get(f"{i}.{key}")
            if arr is None:
                raise UnsupportedForward(f"layer {i} ({kind}) lacks weights {key!r}")
            if (want is not None and tuple(arr.shape) != want) or (ndim and arr.ndim != ndim):
                raise UnsupportedForward(f"layer {i} ({kind}): {key} has shape {arr.shape}")
            return arr

        def act():
            if entry.get("activation") not in _ACTIVATIONS:
                raise UnsupportedForward(f"layer {i}: activation {entry.get('activation')!r}")

        if kind == "ZeroPadding2D":
            (t, b), (l, r) = (_pair(p, "padding") for p in entry["padding"])
            if len(shape) != 3 or min(t, b, l, r) < 0:
                raise UnsupportedForward(f"layer {i}: ZeroPadding2D on {shape}")
            return [shape[0] + t + b, shape[1] + l + r, shape[2]]
        if kind == "Conv2D":
            act()
            if len(shape) != 3:
                raise UnsupportedForward(f"layer {i}: Conv2D on {shape}")
            kernel = need("kernel", ndim=4)
            kh, kw, cin, cout = kernel.shape
            if cin != shape[2]:
                raise UnsupportedForward(f"layer {i}: kernel {kernel.shape} for input {shape}")
            if entry.get("use_bias"):
                need("bias", (cout,))
            sh, sw = _pair(entry["strides"], "strides")
            if sh < 1 or sw < 1:
                raise UnsupportedForward(f"layer {i}: strides {sh, sw}")
            if entry.get("padding") == "same":
                oh, ow = -(-shape[0] // sh), -(-shape[1] // sw)
            elif entry.get("padding") == "valid":
                oh, ow = (shape[0] - kh) // sh + 1, (shape[1] - kw) // sw + 1
            else:
                raise UnsupportedForward(f"layer {i}: padding {entry.get('padding')!r}")
            if oh < 1 or ow < 1:
                raise UnsupportedForward(f"layer {i}: empty output")
            return [oh, ow, cout]
        if kind == "BatchNormalization":
            c = shape[-1]
            need("moving_mean", (c,))
            need("moving_variance", (c,))
            for key in ("gamma", "beta"):
                if f"{i}.{key}" in weights:
                    need(key, (c,))
            if not float(entry.get("epsilon", -1)) > 0:
                raise UnsupportedForward(f"layer {i}: epsilon {entry.get('epsilon')!r}")
            return list(shape)
        if kind == "Activation":
            act()
            return list(shape)
        if kind == "Flatten":
            return [int(np.prod(shape))]
        if kind == "Dense":
            act()
            if len(shape) != 1:
                raise UnsupportedForward(f"layer {i}: Dense on {shape}")
            kernel = need("kernel", ndim=2)
            if kernel.shape[0] != shape[0]:
                raise UnsupportedForward(f"layer {i}: kernel {kernel.shape} for input {shape}")
            if entry.get("use_bias"):
                need("bias", (kernel.shape[1],))
            return [int(kernel.shape[1])]
        if kind == "UnitNormalization":
            if len(shape) != 1:
                raise UnsupportedForward(f"layer {i}: UnitNormalization on {shape}")
            return list(shape)
        raise UnsupportedForward(f"layer {i}: kind {kind!r}")

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
        raise UnsupportedForward(f"layer {i}: kind {kind!r}")

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
        """(forward, sha256 of the model.keras it was exported from); raises UnsupportedForward
        (or OSError / ValueError) on anything malformed. Never unpickles."""
        doc = json.loads((folder / FORWARD_JSON).read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc.get("model_sha256"), str):
            raise UnsupportedForward("forward.json names no model checksum")
        with np.load(folder / FORWARD_NPZ, allow_pickle=False) as z:
            weights = {k: z[k] for k in z.files}
        for k, v in weights.items():
            if v.dtype != np.float32:
                raise UnsupportedForward(f"weights {k} are {v.dtype}, not float32")
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


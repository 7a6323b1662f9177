"""Image sources: the images of ``build images`` / ``add``, and of ``query --image``.

* :func:`load_image_source` turns a SOURCE of ``build images`` into uint8 images of one size
  and colour mode, with labels and source paths: ``mnist`` (the 5,000 digits shipped in the
  package), ``mnist-full`` (``keras.datasets.mnist``, needs the internet), a folder of
  .png/.jpg/.jpeg/.bmp/.gif files (labels = names of the immediate subfolders), or a
  .npy/.npz array of shape (N, H, W[, C]).
* :func:`read_image_file` reads one image for ``query --image``; 8-bit non-interlaced PNGs
  are decoded with zlib + numpy (:func:`latentsearch.io.png.decode_png`), anything else by
  TensorFlow.
* :func:`conform_images` brings arrays of any size / channel count / value range to the
  size and colour an encoder was trained on (resize, rgb<->gray), or refuses clearly.

Only numpy is imported at module import; TensorFlow (decoding other formats, resizing) only
when needed: a PNG query of the collection's size never imports it.
Image headers are checked for absurd dimensions *before* anything is decoded.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.errors import DimensionMismatch, InvalidInput
from latentsearch.io.arrays import load_npy
from latentsearch.io.pixels import convert_channels, to_uint8
from latentsearch.io.png import MAX_PIXELS, MAX_SIDE, decode_png, image_header_size
# encode_png moved to io.png; re-exported until tests/test_image_encoders.py imports it from there
from latentsearch.io.png import encode_png  # noqa: F401
from latentsearch.types import label_text
from latentsearch.encoders.tf import import_keras, import_tensorflow

__all__ = [
    "ImageSet",
    "IMAGE_EXTENSIONS",
    "load_image_source",
    "read_image_file",
    "conform_images",
]

#: file name endings read from a folder (case-insensitive)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

_COLORS = {"gray": 1, "grey": 1, "rgb": 3}


@dataclass
class ImageSet:
    """Images of one size and colour mode, with what is known about each."""

    images: np.ndarray  # uint8 (N, size, size, C)
    labels: list[str | None]
    sources: list[str | None]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def __len__(self) -> int:
        return int(self.images.shape[0])


# --------------------------------------------------------------------------- helpers


def _channels(color: str) -> int:
    try:
        return _COLORS[str(color).lower()]
    except KeyError:
        raise InvalidInput(f"color must be 'gray' or 'rgb', got {color!r}") from None


def _check_size(size: int) -> int:
    try:
        size = int(size)
    except (TypeError, ValueError):
        raise InvalidInput(f"size must be an integer, got {size!r}") from None
    if not 4 <= size <= 1024:
        raise InvalidInput(f"size must be between 4 and 1024 pixels, got {size}")
    return size


def _resize(batch: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, C) -> uint8 (N, size, size, C) with TensorFlow's bilinear resize
    (antialiased when shrinking)."""
    if batch.shape[1] == size and batch.shape[2] == size:
        return batch
    tf = import_tensorflow()

    out = []
    step = 1024
    for start in range(0, len(batch), step):
        part = tf.image.resize(
            batch[start : start + step].astype(np.float32), (size, size), antialias=True
        ).numpy()
        out.append(np.clip(np.rint(part), 0, 255).astype(np.uint8))
    if not out:
        return np.zeros((0, size, size, batch.shape[-1]), np.uint8)
    return np.concatenate(out)


def conform_images(items: Any, *, size: int, channels: int, what: str = "images") -> np.ndarray:
    """One image (H, W) / (H, W, C) or a batch (N, H, W) / (N, H, W, C) as uint8
    (N, size, size, channels): values converted to uint8, resized, rgb<->gray converted.

    A 3-D array is read as one (H, W, C) image when its last axis is 1-4 long and differs
    from the one before it, else as a batch of (N, H, W) gray images. A list of images of
    different sizes is accepted too. Anything else is a :class:`DimensionMismatch`.
    """
    if isinstance(items, (list, tuple)) and items:
        shapes = {np.shape(x) for x in items}
        if len(shapes) > 1:  # images of different sizes: one at a time
            return np.concatenate(
                [conform_images(x, size=size, channels=channels, what=what) for x in items]
            )
    arr = to_uint8(items, what)
    if arr.ndim == 2:
        arr = arr[None, :, :, None]
    elif arr.ndim == 3:
        if arr.shape[-1] in (1, 2, 3, 4) and arr.shape[-1] != arr.shape[-2]:
            arr = arr[None]
        else:
            arr = arr[..., None]
    elif arr.ndim != 4:
        raise DimensionMismatch(
            f"{what} must be one image (H, W) or (H, W, C), or a batch (N, H, W) or "
            f"(N, H, W, C); got an array of shape {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise InvalidInput(f"no {what} given (empty array)")
    if arr.shape[-1] not in (1, 2, 3, 4):
        raise DimensionMismatch(
            f"{what} have {arr.shape[-1]} channels (shape {arr.shape}); expected 1 (gray), "
            f"3 (rgb) or 4 (rgba) in the last axis"
        )
    if min(arr.shape[1], arr.shape[2]) < 1 or max(arr.shape[1], arr.shape[2]) > MAX_SIDE:
        raise DimensionMismatch(f"{what} of {arr.shape[1]}x{arr.shape[2]} pixels cannot be used")
    arr = convert_channels(arr, channels)
    return np.ascontiguousarray(_resize(arr, size))



def _decode_file(path: Path, size: int, channels: int) -> np.ndarray:
    """uint8 (size, size, channels) from an image file; raises InvalidInput with the reason."""
    try:
        info = image_header_size(path)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
    if info is not None:
        fmt, w, h = info
        if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
            raise InvalidInput(
                f"{path}: the {fmt.upper()} header declares {w}x{h} pixels, more than the "
                f"{MAX_SIDE}x{MAX_SIDE} accepted; not decoded"
            )
        if w == 0 or h == 0:
            raise InvalidInput(f"{path}: the {fmt.upper()} header declares an empty image")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
    img = decode_png(data)  # the common case, without TensorFlow
    if img is not None:
        return conform_images(img[None], size=size, channels=channels, what=str(path))[0]
    tf = import_tensorflow()

    try:
        img = tf.io.decode_image(data, expand_animations=False).numpy()
    except Exception as exc:  # tf.errors.* for corrupt or unsupported data
        msg = str(getattr(exc, "message", "") or exc).strip().splitlines()
        reason = msg[0] if msg else type(exc).__name__
        raise InvalidInput(f"{path}: not a readable image ({reason[:120]})") from None
    if img.dtype != np.uint8:
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    return conform_images(img[None], size=size, channels=channels, what=str(path))[0]


def read_image_file(path: str | Path, *, size: int = 28, color: str = "gray") -> np.ndarray:
    """One image file as uint8 (size, size, C), for ``query --image``."""
    path = Path(path)
    size, channels = _check_size(size), _channels(color)
    if not path.exists():
        raise InvalidInput(f"image file not found: {path}")
    if path.is_dir():
        raise InvalidInput(f"{path} is a folder, not an image file")
    return _decode_file(path, size, channels)


# --------------------------------------------------------------------------- sources


def _data_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "data"


def _limit(n: int, limit: int | None) -> int:
    if limit is None:
        return n
    limit = int(limit)
    if limit < 1:
        raise InvalidInput(f"limit must be at least 1, got {limit}")
    return min(n, limit)


def _mnist(size: int, channels: int, limit: int | None) -> ImageSet:
    with np.load(_data_dir() / "mnist_5k.npz", allow_pickle=False) as d:
        x, y = d["x"], d["y"]
    n = _limit(len(x), limit)
    if n < len(x):  # the sample is sorted by label: take evenly spaced items, every class
        keep = np.unique(np.round(np.linspace(0, len(x) - 1, n)).astype(np.int64))
        x, y = x[keep], y[keep]
    images = conform_images(x[..., None], size=size, channels=channels)
    return ImageSet(images, [str(int(v)) for v in y], [None] * len(y))


def _mnist_full(size: int, channels: int, limit: int | None) -> ImageSet:
    try:
        keras = import_keras()
        (xa, ya), (xb, yb) = keras.datasets.mnist.load_data()
    except Exception as exc:
        raise InvalidInput(
            "mnist-full downloads MNIST through keras.datasets.mnist and needs the internet "
            f"(it failed: {type(exc).__name__}: {str(exc)[:120]}); offline, use the built-in "
            "sample 'mnist' (5,000 digits shipped in the package)"
        ) from None
    x, y = np.concatenate([xa, xb]), np.concatenate([ya, yb])
    n = _limit(len(x), limit)
    x, y = x[:n], y[:n]
    images = conform_images(x[..., None], size=size, channels=channels)
    return ImageSet(images, [str(int(v)) for v in y], [None] * n)


def _folder(root: Path, size: int, channels: int, limit: int | None) -> ImageSet:
    files = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise InvalidInput(
            f"no image files in folder {root} (looked for "
            f"{', '.join(IMAGE_EXTENSIONS)}, in subfolders too)"
        )
    images, labels, sources, skipped = [], [], [], []
    n_max = _limit(len(files), limit)
    for p in files:
        if len(images) >= n_max:
            break
        try:
            images.append(_decode_file(p, size, channels))
        except InvalidInput as exc:
            reason = str(exc)
            prefix = f"{p}: "
            skipped.append((str(p), reason[len(prefix):] if reason.startswith(prefix) else reason))
            continue
        rel = p.relative_to(root).parts
        labels.append(rel[0] if len(rel) > 1 else None)
        sources.append(str(p))
    if skipped:
        lines = "\n".join(f"  {path}: {why}" for path, why in skipped)
        print(
            f"warning: skipped {len(skipped)} unreadable image file(s) in {root}:\n{lines}",
            file=sys.stderr,
        )
    if not images:
        raise InvalidInput(
            f"none of the {len(files)} image file(s) in {root} could be read "
            f"(first problem: {skipped[0][0]}: {skipped[0][1]})"
        )
    return ImageSet(np.stack(images), labels, sources, skipped)


def _array_file(path: Path, size: int, channels: int, limit: int | None) -> ImageSet:
    labels = None
    loaded = load_npy(path)
    try:
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                keys = list(loaded.files)
                key = next((k for k in ("x", "images") if k in keys), None)
                if key is None:
                    if len(keys) != 1:
                        raise InvalidInput(
                            f"{path} holds arrays {keys}; name the images 'x' or 'images'"
                        )
                    key = keys[0]
                x = loaded[key]
                lkey = next((k for k in ("y", "labels") if k in keys and k != key), None)
                if lkey is not None:
                    labels = loaded[lkey]
        else:
            x = loaded
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InvalidInput(f"{path} holds pickled Python objects, which are never loaded") from None
        raise InvalidInput(f"{path}: {exc}") from None
    if x.ndim not in (3, 4):
        raise DimensionMismatch(f"{path}: images must be an array of shape (N, H, W), "
                                f"(N, H, W, C) or one image (H, W, C), got {x.shape}")
    if x.ndim == 3:  # one (H, W, C) image (C = 1, 3, 4, unlike W), else N gray (H, W) images
        x = x[None] if x.shape[-1] in (1, 3, 4) and x.shape[-1] != x.shape[-2] else x[..., None]
    if len(x) == 0:
        raise InvalidInput(f"{path} holds no images (shape {x.shape})")
    n = _limit(len(x), limit)
    x = x[:n]
    label_list: list[str | None]
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) < n:
            raise InvalidInput(f"{path}: {len(labels)} labels for {len(x)} images")
        label_list = [label_text(v) for v in labels[:n]]
    else:
        label_list = [None] * n
    images = conform_images(x, size=size, channels=channels, what=f"images in {path}")
    return ImageSet(images, label_list, [None] * n)


def load_image_source(
    source: str | Path,
    *,
    size: int = 28,
    color: str = "gray",
    limit: int | None = None,
) -> ImageSet:
    """Images from a SOURCE of ``build images``, as uint8 (N, size, size, C).

    ``mnist``: the built-in 5,000 digits (with ``limit``, evenly spaced items so every class
    stays in); ``mnist-full``: keras.datasets.mnist, train then test (needs the internet);
    a folder of images (recursive; label = immediate subfolder, None at the top level;
    unreadable files are skipped and listed in a warning on stderr and in ``skipped``);
    a .npy / .npz file (N, H, W[, C]); .npz takes "x" or "images" (or its only array) and
    labels from "y" or "labels".
    """
    size, channels = _check_size(size), _channels(color)
    text = str(source)
    if text == "mnist":
        return _mnist(size, channels, limit)
    if text == "mnist-full":
        return _mnist_full(size, channels, limit)
    path = Path(source)
    if not path.exists():
        raise InvalidInput(
            f"image source {text!r} not found: give 'mnist', 'mnist-full', a folder of images, "
            "or a .npy/.npz file"
        )
    if path.is_dir():
        return _folder(path, size, channels, limit)
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        return _array_file(path, size, channels, limit)
    if suffix in IMAGE_EXTENSIONS:
        img = read_image_file(path, size=size, color=color)
        return ImageSet(img[None], [None], [str(path)])
    raise InvalidInput(
        f"cannot read images from {path}: expected a folder, a .npy/.npz file or an image file"
    )


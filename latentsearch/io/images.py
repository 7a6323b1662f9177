"""Image sources: the images of ``build images`` / ``add``, and of ``query --image``.

* :func:`load_image_source` turns a SOURCE of ``build images`` into uint8 images of one size
  and colour mode, with labels and source paths: ``mnist`` (the 5,000 digits shipped in the
  package), ``mnist-full`` (``keras.datasets.mnist``, needs the internet), a folder of image
  files (labels = names of the immediate subfolders), or a .npy/.npz array (N, H, W[, C]).
* :func:`read_image_file` reads one image for ``query --image``.
* :func:`conform_images` brings arrays of any size / channel count / value range to the
  size and colour an encoder was trained on, or refuses clearly.

Every file is read by Pillow (:data:`IMAGE_EXTENSIONS` in folders; any format Pillow knows as
a query): EXIF orientation applied, the first frame of an animation, colour modes and
non-square shapes handled as :mod:`latentsearch.io.pixels` says. The size in the header is
checked before any pixel is decoded (decompression bombs). No TensorFlow on any of these
paths, except ``mnist-full``, which downloads through Keras.
"""

from __future__ import annotations

import re
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from latentsearch.errors import DimensionMismatch, InvalidInput
from latentsearch.io.arrays import load_npy
from latentsearch.io.pixels import (
    DEFAULT_FIT,
    LEGACY_FIT,
    RESAMPLE,
    check_fit,
    convert_channels,
    fit_array,
    fit_image,
    to_gray_or_rgb,
    to_uint8,
)
from latentsearch.progress import bar, warn
from latentsearch.types import label_text

__all__ = [
    "ImageSet",
    "IMAGE_EXTENSIONS",
    "MAX_SIDE",
    "MAX_PIXELS",
    "image_options",
    "open_image",
    "load_image_source",
    "read_image_file",
    "conform_images",
    "list_folder",
    "report_skipped",
    "color_channels",
    "decode_files",
]

#: file name endings read from a folder (case-insensitive); other files are listed as skipped
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: largest width or height accepted from an image header (decompression-bomb guard)
MAX_SIDE = 10_000
#: largest width * height accepted
MAX_PIXELS = 50_000_000

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


# --------------------------------------------------------------------------- settings


def color_channels(color: str) -> int:
    """Channels of a colour mode: gray 1, rgb 3."""
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


def image_options(config: dict[str, Any]) -> dict[str, Any]:
    """How an image encoder's config says files and arrays are read: ``size``, ``color``,
    ``fit`` and ``resample``, as keywords of :func:`read_image_file` / :func:`load_image_source`.
    Configs written before ``fit`` was recorded were resized both ways: ``stretch``."""
    channels = int(config.get("channels", 1))
    return {
        "size": int(config.get("size", 28)),
        "color": config.get("color") or ("gray" if channels == 1 else "rgb"),
        "fit": config.get("fit", LEGACY_FIT),
        "resample": config.get("resample", RESAMPLE),
    }


# --------------------------------------------------------------------------- arrays


def conform_images(items: Any, *, size: int, channels: int, fit: str = DEFAULT_FIT,
                   resample: str = RESAMPLE, what: str = "images") -> np.ndarray:
    """One image (H, W) / (H, W, C) or a batch (N, H, W) / (N, H, W, C) as uint8
    (N, size, size, channels): values converted to uint8, rgb<->gray converted (alpha on
    white), then made square by ``fit`` and resized.

    A 3-D array is read as one (H, W, C) image when its last axis is 1-4 long and differs
    from the one before it, else as a batch of (N, H, W) gray images. A list of images of
    different sizes is accepted too. Anything else is a :class:`DimensionMismatch`.
    """
    check_fit(fit)
    if isinstance(items, (list, tuple)) and items:
        shapes = {np.shape(x) for x in items}
        if len(shapes) > 1:  # images of different sizes: one at a time
            return np.concatenate([
                conform_images(x, size=size, channels=channels, fit=fit, resample=resample,
                               what=what)
                for x in items
            ])
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
    if arr.shape[1] != size or arr.shape[2] != size:
        arr = np.stack([fit_array(img, size, fit, resample) for img in arr])
    return np.ascontiguousarray(arr)


# --------------------------------------------------------------------------- files

#: warnings filters are process-wide: the one that silences Pillow's bomb warning (our own
#: limit, lower, refuses those images anyway) is set under this lock, around the header read
_OPEN_LOCK = threading.Lock()


def _short(exc: BaseException, path: Path) -> str:
    """A short reason from a decoder's exception, without the path it may repeat."""
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not an image format Pillow reads"
    text = str(exc).replace(f"'{path}'", "").replace(str(path), "").strip(" :")
    return (text or type(exc).__name__)[:120]


def open_image(path: str | Path) -> Image.Image:
    """The image file at ``path`` opened by Pillow with only its header read, its size
    checked against :data:`MAX_SIDE` / :data:`MAX_PIXELS`. Pillow's own bomb warning (above
    89M pixels, which our limit refuses anyway) is silenced and its error (above 179M)
    becomes the same :class:`InvalidInput`. Close it, or use it in a ``with``."""
    path = Path(path)
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        declared = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise InvalidInput(
            f"{path}: its header declares {declared}, more than the {MAX_PIXELS:,} accepted "
            "(a decompression bomb?); not decoded"
        ) from None
    except FileNotFoundError:
        raise InvalidInput(f"image file not found: {path}") from None
    except Image.UnidentifiedImageError as exc:
        raise InvalidInput(f"{path}: not a readable image ({_short(exc, path)})") from None
    except OSError as exc:
        if exc.errno is not None:  # the file itself: permissions, a folder...
            raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
        raise InvalidInput(f"{path}: not a readable image ({_short(exc, path)})") from None
    except Exception as exc:  # a damaged header can raise anything from a plugin
        raise InvalidInput(f"{path}: not a readable image ({_short(exc, path)})") from None
    w, h = img.size
    if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
        img.close()
        raise InvalidInput(
            f"{path}: the {img.format or 'image'} header declares {w}x{h} pixels, more than "
            f"the {MAX_SIDE}x{MAX_SIDE} ({MAX_PIXELS:,} pixels) accepted; not decoded"
        )
    if w == 0 or h == 0:
        img.close()
        raise InvalidInput(f"{path}: the {img.format or 'image'} header declares an empty image")
    return img


def _decode_file(path: Path, size: int, channels: int, fit: str, resample: str) -> np.ndarray:
    """uint8 (size, size, channels) from an image file; raises InvalidInput with the reason."""
    with open_image(path) as img:
        try:
            img.draft(None, (2 * size, 2 * size))  # JPEG: decode at 1/2..1/8 scale, >= 2x size
            img.load()  # the (first frame's) pixels
            try:
                upright = ImageOps.exif_transpose(img)
            except Exception:  # a damaged EXIF block: the pixels as stored
                upright = img
            out = fit_image(to_gray_or_rgb(upright, channels, str(path)), size, fit, resample)
            arr = np.asarray(out)
        except InvalidInput:
            raise
        except Exception as exc:  # truncated or damaged data: any plugin's exception
            raise InvalidInput(f"{path}: not a readable image ({_short(exc, path)})") from None
    return arr[..., None] if arr.ndim == 2 else arr


def read_image_file(path: str | Path, *, size: int = 28, color: str = "gray",
                    fit: str = DEFAULT_FIT, resample: str = RESAMPLE) -> np.ndarray:
    """One image file as uint8 (size, size, C), for ``query --image``; ``fit`` and
    ``resample`` as the collection was built (:func:`image_options`)."""
    path = Path(path)
    size, channels, fit = _check_size(size), color_channels(color), check_fit(fit)
    if not path.exists():
        raise InvalidInput(f"image file not found: {path}")
    if path.is_dir():
        raise InvalidInput(f"{path} is a folder, not an image file")
    return _decode_file(path, size, channels, fit, resample)


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


def _mnist(size: int, channels: int, limit: int | None, resample: str) -> ImageSet:
    with np.load(_data_dir() / "mnist_5k.npz", allow_pickle=False) as d:
        x, y = d["x"], d["y"]
    n = _limit(len(x), limit)
    if n < len(x):  # the sample is sorted by label: take evenly spaced items, every class
        keep = np.unique(np.round(np.linspace(0, len(x) - 1, n)).astype(np.int64))
        x, y = x[keep], y[keep]
    images = conform_images(x[..., None], size=size, channels=channels, resample=resample)
    return ImageSet(images, [str(int(v)) for v in y], [None] * len(y))


def _mnist_full(size: int, channels: int, limit: int | None, resample: str) -> ImageSet:
    from latentsearch.encoders.tf import import_keras

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
    images = conform_images(x[..., None], size=size, channels=channels, resample=resample)
    return ImageSet(images, [str(int(v)) for v in y], [None] * n)


def _folder_files(root: Path) -> tuple[list[Path], list[Path], int]:
    """(image files, other files, how many hidden files) under ``root``, sorted; names
    starting with '.' (files or folders) are hidden and never looked at."""
    images, others, hidden = [], [], 0
    for p in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in p.relative_to(root).parts):
            hidden += p.is_file()
        elif p.is_file():
            (images if p.suffix.lower() in IMAGE_EXTENSIONS else others).append(p)
    return images, others, hidden


def _folder(root: Path, size: int, channels: int, limit: int | None, fit: str,
            resample: str) -> ImageSet:
    files, others, hidden = list_folder(root)
    data = decode_files(files[: _limit(len(files), limit)] if limit else files, root,
                        size=size, channels=channels, fit=fit, resample=resample)
    data.skipped = report_skipped(root, len(files), others, hidden, data.skipped, len(data))
    return data


def report_skipped(root: Path, n_files: int, others: list[Path], hidden: int,
                   unreadable: list[tuple[str, str]], n_read: int) -> list[tuple[str, str]]:
    """Every file of a folder source left out (path, why), warned about in one message;
    InvalidInput when none of its ``n_files`` image files could be read."""
    skipped = [(str(p), f"not an image file ({p.suffix.lower() or 'no suffix'})")
               for p in others] + unreadable
    if skipped or hidden:
        lines = [f"  {path}: {why}" for path, why in skipped]
        if hidden:
            lines.append(f"  ({hidden} hidden file(s), names starting with '.', not looked at)")
        warn(f"warning: skipped {len(skipped)} file(s) in {root}:\n" + "\n".join(lines))
    if not n_read:
        raise InvalidInput(
            f"none of the {n_files} image file(s) in {root} could be read "
            f"(first problem: {unreadable[0][0]}: {unreadable[0][1]})"
        )
    return skipped


def list_folder(root: Path) -> tuple[list[Path], list[Path], int]:
    """(image files, other files, hidden files) of a folder source; InvalidInput when it
    holds no image files. A ``--ray`` build splits the image files between its workers."""
    files, others, hidden = _folder_files(root)
    if not files:
        found = f"; found {len(others)} other file(s), e.g. {others[0].name}" if others else ""
        raise InvalidInput(
            f"no image files in folder {root} (looked for "
            f"{', '.join(IMAGE_EXTENSIONS)}, in subfolders too{found})"
        )
    return files, others, hidden


def decode_files(files: list[Path], root: Path, *, size: int, channels: int, fit: str,
                 resample: str) -> ImageSet:
    """Decode image files of the folder ``root`` (label: the subfolder under ``root``);
    files that cannot be read are left out and listed in ``skipped``. May hold no images."""
    images, labels, sources, skipped = [], [], [], []
    for p in bar(files, desc=f"reading {root.name}", unit="file"):
        try:
            images.append(_decode_file(p, size, channels, fit, resample))
        except InvalidInput as exc:
            reason = str(exc)
            prefix = f"{p}: "
            skipped.append((str(p), reason[len(prefix):] if reason.startswith(prefix) else reason))
            continue
        rel = p.relative_to(root).parts
        labels.append(rel[0] if len(rel) > 1 else None)
        sources.append(str(p))
    stacked = (np.stack(images) if images
               else np.zeros((0, size, size, channels), dtype=np.uint8))
    return ImageSet(stacked, labels, sources, skipped)


def _array_file(path: Path, size: int, channels: int, limit: int | None, fit: str,
                resample: str) -> ImageSet:
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
            raise InvalidInput(
                f"{path} holds pickled Python objects, which are never loaded"
            ) from None
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
    images = conform_images(x, size=size, channels=channels, fit=fit, resample=resample,
                            what=f"images in {path}")
    return ImageSet(images, label_list, [None] * n)


def load_image_source(
    source: str | Path,
    *,
    size: int = 28,
    color: str = "gray",
    fit: str = DEFAULT_FIT,
    resample: str = RESAMPLE,
    limit: int | None = None,
) -> ImageSet:
    """Images from a SOURCE of ``build images``, as uint8 (N, size, size, C).

    ``mnist``: the built-in 5,000 digits (with ``limit``, evenly spaced items so every class
    stays in); ``mnist-full``: keras.datasets.mnist, train then test (needs the internet);
    a folder of images (recursive; label = immediate subfolder, None at the top level;
    files that are not images or cannot be read are skipped, and listed in a logged
    warning and in ``skipped``); a .npy / .npz file (N, H, W[, C]); .npz takes "x" or
    "images" (or its only array) and labels from "y" or "labels". ``fit``: how non-square
    images become square (crop, pad, stretch).
    """
    size, channels, fit = _check_size(size), color_channels(color), check_fit(fit)
    text = str(source)
    if text == "mnist":
        return _mnist(size, channels, limit, resample)
    if text == "mnist-full":
        return _mnist_full(size, channels, limit, resample)
    path = Path(source)
    if not path.exists():
        raise InvalidInput(
            f"image source {text!r} not found: give 'mnist', 'mnist-full', a folder of images, "
            "or a .npy/.npz file"
        )
    if path.is_dir():
        return _folder(path, size, channels, limit, fit, resample)
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        return _array_file(path, size, channels, limit, fit, resample)
    if suffix in IMAGE_EXTENSIONS:
        img = read_image_file(path, size=size, color=color, fit=fit, resample=resample)
        return ImageSet(img[None], [None], [str(path)])
    raise InvalidInput(
        f"cannot read images from {path}: expected a folder, a .npy/.npz file or an image file "
        f"({', '.join(IMAGE_EXTENSIONS)})"
    )
